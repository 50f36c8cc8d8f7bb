"""The SECC's configuration file (TOML): which interface, which protocols, TLS, Plug & Charge, options.

::

    interface = "eth1"                  # the PLC modem's Ethernet interface (link-local IPv6)
    evse_id = "DE*EVF*E12345*1"         # 7..32 ASCII characters (fits DIN 70121, ISO 15118-2 and -20)
    connector = 1                       # the connector this SECC serves
    protocols = ["iso20", "iso2", "din"]  # offered in SupportedAppProtocol (the EV's priority decides)
    hlc = true                          # 5 % duty: the connector waits for the session's PowerDelivery
    basic_fallback = true               # no SessionSetupReq in time after plug-in: IEC 61851-1 basic charging
    slac = false                        # ISO 15118-3 SLAC on the interface before SDP
    slac_modem = "qca7000"              # the local modem to key (qca7000), or none (a simulation)
    tcp = true                          # plain TCP port (ISO 15118-2 EIM, DIN 70121)
    tcp_port = 0                        # 0: a free port of the dynamic range

    [tls]                               # optional: the TLS port
    profile = "iso2+iso20"              # iso2 (TLS 1.2) | iso20 (TLS 1.3) | iso2+iso20
    cert_chain = "secc_chain.pem"       # relative paths are relative to this file
    key = "secc.key"
    key_password_file = "secc.pass"     # optional
    trust_anchors = "v2g_roots.pem"     # optional; needed to check the EV's certificate
    client_auth = "optional"            # optional: none | optional | required (default per profile)
    port = 0

    [pnc]                               # optional: ISO 15118-2 Plug & Charge (needs TLS)
    roots = ["v2g_root.pem", "mo_root.pem"]

    [iso2]                              # optional, defaults shown
    eim = true
    free_service = false
    certificate_service = true
    metering_receipts = false
    sae_bidi = false
    dc_modes = ["DC_extended"]

    [iso20]                             # optional, defaults shown
    require_tls = true                  # ISO 15118-20 runs over TLS 1.3 only (Table 6); false for lab EVs
    bidirectional = false
    control_modes = ["scheduled", "dynamic"]
    pricing = "none"                    # none | absolute | levels
    service_renegotiation = true
    standby_allowed = false
    free_service = false

Every error names the file and the key (:class:`SeccConfigError`); unknown keys are refused, so a typo
cannot silently leave an option at its default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from firmware.files import read_toml
from firmware.iso15118.session.iso2 import DC_MODES, Iso2Config
from firmware.iso15118.session.iso20 import ControlMode, Iso20Config, Pricing
from firmware.iso15118.session.pnc import load_roots
from firmware.iso15118.transport import ClientAuth, TlsFiles, TlsProfile

PROTOCOLS = ("iso20", "iso2", "din")
SLAC_MODEMS = ("qca7000", "none")
#: The shortest EVSEID ISO 15118-2 takes (evseIDType minLength 7) and the longest DIN 70121 takes (its
#: EVSEID is hexBinary of at most 32 bytes: the ASCII bytes of the id).
EVSE_ID_MIN, EVSE_ID_MAX = 7, 32
_CONTROL_MODES = {"scheduled": ControlMode.SCHEDULED, "dynamic": ControlMode.DYNAMIC}
_PRICING = {"none": Pricing.NONE, "absolute": Pricing.ABSOLUTE, "levels": Pricing.LEVELS}

_TOP_KEYS = {
    "format",
    "interface",
    "evse_id",
    "connector",
    "protocols",
    "hlc",
    "basic_fallback",
    "slac",
    "slac_modem",
    "tcp",
    "tcp_port",
    "tls",
    "pnc",
    "iso2",
    "iso20",
}
_TLS_KEYS = {"profile", "cert_chain", "key", "key_password_file", "trust_anchors", "client_auth", "port"}
_PNC_KEYS = {"roots"}
_ISO2_KEYS = {"eim", "free_service", "certificate_service", "metering_receipts", "sae_bidi", "dc_modes"}
_ISO20_KEYS = {
    "require_tls",
    "bidirectional",
    "control_modes",
    "pricing",
    "service_renegotiation",
    "standby_allowed",
    "free_service",
}


class SeccConfigError(ValueError):
    """The SECC configuration is missing, unreadable or wrong; the message names the file and the key."""


@dataclass(frozen=True)
class TlsSettings:
    files: TlsFiles
    profile: TlsProfile
    client_auth: ClientAuth | None = None  # None: the profile's default (transport.tls_context)
    port: int = 0


@dataclass(frozen=True)
class SeccConfig:
    interface: str
    evse_id: str
    connector: int = 1
    protocols: tuple[str, ...] = PROTOCOLS
    hlc: bool = True
    basic_fallback: bool = True
    slac: bool = False
    slac_modem: str = "qca7000"
    tcp: bool = True
    tcp_port: int = 0
    tls: TlsSettings | None = None
    pnc_roots: tuple[Path, ...] = ()
    iso2: Iso2Config = field(default_factory=Iso2Config)
    iso20: Iso20Config = field(default_factory=Iso20Config)
    iso20_require_tls: bool = True
    source: str = "<config>"  # where it was read from, for error messages

    def __post_init__(self) -> None:
        where = self.source
        if not self.interface:
            raise SeccConfigError(f"{where}: interface must name a network interface")
        if not (EVSE_ID_MIN <= len(self.evse_id) <= EVSE_ID_MAX and self.evse_id.isascii()):
            raise SeccConfigError(
                f"{where}: evse_id must be {EVSE_ID_MIN}..{EVSE_ID_MAX} ASCII characters, not {self.evse_id!r}"
            )
        if not self.protocols or len(set(self.protocols)) != len(self.protocols):
            raise SeccConfigError(f"{where}: protocols must name each of {', '.join(PROTOCOLS)} at most once")
        for name in self.protocols:
            if name not in PROTOCOLS:
                raise SeccConfigError(f"{where}: protocols: {name!r} is not one of {', '.join(PROTOCOLS)}")
        if self.slac_modem not in SLAC_MODEMS:
            raise SeccConfigError(
                f"{where}: slac_modem must be one of {', '.join(SLAC_MODEMS)}, not {self.slac_modem!r}"
            )
        if not self.tcp and self.tls is None:
            raise SeccConfigError(f"{where}: tcp = false needs a [tls] section: the SECC would have no port")
        if self.pnc_roots and self.tls is None:
            raise SeccConfigError(f"{where}: [pnc] needs a [tls] section: Plug & Charge runs over TLS only")
        iso20_over_tls = self.tls is not None and self.tls.profile is not TlsProfile.ISO2
        if "iso20" in self.protocols and self.iso20_require_tls and not iso20_over_tls:
            raise SeccConfigError(
                f"{where}: protocols has iso20 with iso20.require_tls, but no TLS 1.3 port: "
                "set tls.profile to iso20 or iso2+iso20 (or iso20.require_tls = false for lab EVs)"
            )


def load_secc_config(path: Path) -> SeccConfig:
    """Read and check a SECC configuration file; relative file names are relative to its directory."""
    doc = read_toml(path, "the SECC configuration", SeccConfigError)
    return parse_secc_config(doc, where=str(path), base=path.parent)


def parse_secc_config(doc: Mapping[str, Any], *, where: str = "<config>", base: Path | None = None) -> SeccConfig:
    """A :class:`SeccConfig` from a parsed TOML document (``where`` names it in errors)."""
    base = base or Path.cwd()
    _only(where, "", doc, _TOP_KEYS)
    fmt = doc.get("format", 1)
    if fmt != 1:
        raise SeccConfigError(f"{where}: format {fmt!r} is not supported (1 is)")
    interface = _text(where, doc, "interface", required=True)
    evse_id = _text(where, doc, "evse_id", required=True)
    protocols = _texts(where, doc, "protocols", PROTOCOLS, default=PROTOCOLS)
    tls = _tls(where, _table(where, doc, "tls"), base) if "tls" in doc else None
    pnc = _table(where, doc, "pnc") if "pnc" in doc else {}
    _only(where, "pnc", pnc, _PNC_KEYS)
    roots = tuple(_path(where, "pnc.roots", r, base) for r in _list(where, pnc, "roots", "pnc.")) if pnc else ()
    if pnc and not roots:
        raise SeccConfigError(f"{where}: pnc.roots must list at least one V2G root certificate file")
    iso2_doc = _table(where, doc, "iso2") if "iso2" in doc else {}
    _only(where, "iso2", iso2_doc, _ISO2_KEYS)
    iso20_doc = _table(where, doc, "iso20") if "iso20" in doc else {}
    _only(where, "iso20", iso20_doc, _ISO20_KEYS)
    return SeccConfig(
        interface=interface,
        evse_id=evse_id,
        connector=_int(where, doc, "connector", 1, low=1),
        protocols=protocols,
        hlc=_bool(where, doc, "hlc", True),
        basic_fallback=_bool(where, doc, "basic_fallback", True),
        slac=_bool(where, doc, "slac", False),
        slac_modem=_choice(where, doc, "slac_modem", SLAC_MODEMS, "qca7000"),
        tcp=_bool(where, doc, "tcp", True),
        tcp_port=_port(where, doc, "tcp_port"),
        tls=tls,
        pnc_roots=roots,
        iso2=_iso2(where, iso2_doc),
        iso20=_iso20(where, iso20_doc),
        iso20_require_tls=_bool(where, iso20_doc, "require_tls", True, prefix="iso20."),
        source=where,
    )


def load_pnc_roots(config: SeccConfig) -> tuple[x509.Certificate, ...]:
    """The configured Plug & Charge root certificates, each checked (pnc.check_root)."""
    blobs = []
    for path in config.pnc_roots:
        try:
            blobs.append(path.read_bytes())
        except OSError as exc:
            raise SeccConfigError(f"{config.source}: pnc.roots: cannot read {path}: {exc}") from exc
    try:
        return load_roots(blobs)
    except ValueError as exc:
        names = ", ".join(str(p) for p in config.pnc_roots)
        raise SeccConfigError(f"{config.source}: pnc.roots ({names}): {exc}") from exc


# ----------------------------------------------------------------------------------------- sections
def _tls(where: str, doc: Mapping[str, Any], base: Path) -> TlsSettings:
    _only(where, "tls", doc, _TLS_KEYS)
    profile_name = _choice(where, doc, "profile", tuple(p.value for p in TlsProfile), None, prefix="tls.")
    auth_name = doc.get("client_auth")
    if auth_name is not None and auth_name not in tuple(a.value for a in ClientAuth):
        allowed = ", ".join(a.value for a in ClientAuth)
        raise SeccConfigError(f"{where}: tls.client_auth must be one of {allowed}, not {auth_name!r}")
    password = None
    if "key_password_file" in doc:
        password_path = _path(where, "tls.key_password_file", doc["key_password_file"], base)
        try:
            password = password_path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SeccConfigError(f"{where}: tls.key_password_file: cannot read {password_path}: {exc}") from exc
    anchors = doc.get("trust_anchors")
    files = TlsFiles(
        cert_chain=_path(where, "tls.cert_chain", _need(where, doc, "cert_chain", "tls."), base),
        key=_path(where, "tls.key", _need(where, doc, "key", "tls."), base),
        key_password=password,
        trust_anchors=None if anchors is None else _path(where, "tls.trust_anchors", anchors, base),
    )
    for name, path in (("cert_chain", files.cert_chain), ("key", files.key), ("trust_anchors", files.trust_anchors)):
        if path is not None and not path.is_file():
            raise SeccConfigError(f"{where}: tls.{name}: {path} does not exist")
    return TlsSettings(
        files=files,
        profile=TlsProfile(profile_name),
        client_auth=None if auth_name is None else ClientAuth(auth_name),
        port=_port(where, doc, "port", prefix="tls."),
    )


def _iso2(where: str, doc: Mapping[str, Any]) -> Iso2Config:
    p = "iso2."
    modes = _texts(where, doc, "dc_modes", DC_MODES, default=("DC_extended",), prefix=p)
    return Iso2Config(
        eim=_bool(where, doc, "eim", True, prefix=p),
        free_service=_bool(where, doc, "free_service", False, prefix=p),
        certificate_service=_bool(where, doc, "certificate_service", True, prefix=p),
        dc_modes=modes,
        sae_bidi=_bool(where, doc, "sae_bidi", False, prefix=p),
        metering_receipts=_bool(where, doc, "metering_receipts", False, prefix=p),
    )


def _iso20(where: str, doc: Mapping[str, Any]) -> Iso20Config:
    p = "iso20."
    modes = _texts(where, doc, "control_modes", tuple(_CONTROL_MODES), default=tuple(_CONTROL_MODES), prefix=p)
    return Iso20Config(
        bidirectional=_bool(where, doc, "bidirectional", False, prefix=p),
        control_modes=tuple(_CONTROL_MODES[m] for m in modes),
        pricing=_PRICING[_choice(where, doc, "pricing", tuple(_PRICING), "none", prefix=p)],
        service_renegotiation=_bool(where, doc, "service_renegotiation", True, prefix=p),
        standby_allowed=_bool(where, doc, "standby_allowed", False, prefix=p),
        free_service=_bool(where, doc, "free_service", False, prefix=p),
    )


# ----------------------------------------------------------------------------------------- values
def _only(where: str, section: str, doc: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        scope = f"[{section}]" if section else "the top level"
        raise SeccConfigError(f"{where}: unknown key(s) in {scope}: {', '.join(unknown)}")


def _table(where: str, doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = doc.get(name)
    if not isinstance(value, dict):
        raise SeccConfigError(f"{where}: [{name}] must be a table")
    return value


def _need(where: str, doc: Mapping[str, Any], name: str, prefix: str = "") -> Any:
    if name not in doc:
        raise SeccConfigError(f"{where}: {prefix}{name} is missing")
    return doc[name]


def _text(where: str, doc: Mapping[str, Any], name: str, *, required: bool = False, prefix: str = "") -> str:
    value = _need(where, doc, name, prefix) if required else doc.get(name, "")
    if not isinstance(value, str):
        raise SeccConfigError(f"{where}: {prefix}{name} must be a string, not {value!r}")
    return value


def _bool(where: str, doc: Mapping[str, Any], name: str, default: bool, *, prefix: str = "") -> bool:
    value = doc.get(name, default)
    if not isinstance(value, bool):
        raise SeccConfigError(f"{where}: {prefix}{name} must be true or false, not {value!r}")
    return value


def _int(where: str, doc: Mapping[str, Any], name: str, default: int, *, low: int, high: int | None = None) -> int:
    value = doc.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f"{low}..{high}" if high is not None else f">= {low}"
        raise SeccConfigError(f"{where}: {name} must be an integer {span}, not {value!r}")
    return value


def _port(where: str, doc: Mapping[str, Any], name: str, *, prefix: str = "") -> int:
    value = doc.get(name, 0)
    # 0 or the dynamic range (IETF RFC 6335; ISO 15118-20 Table 20 wants the SECC's port there).
    if isinstance(value, bool) or not isinstance(value, int) or not (value == 0 or 49152 <= value <= 65535):
        raise SeccConfigError(f"{where}: {prefix}{name} must be 0 (any free port) or 49152..65535, not {value!r}")
    return value


def _choice(
    where: str, doc: Mapping[str, Any], name: str, allowed: tuple[str, ...], default: str | None, *, prefix: str = ""
) -> str:
    value = doc.get(name, default) if default is not None else _need(where, doc, name, prefix)
    if value not in allowed:
        raise SeccConfigError(f"{where}: {prefix}{name} must be one of {', '.join(allowed)}, not {value!r}")
    return str(value)


def _list(where: str, doc: Mapping[str, Any], name: str, prefix: str = "") -> list[Any]:
    value = _need(where, doc, name, prefix)
    if not isinstance(value, list):
        raise SeccConfigError(f"{where}: {prefix}{name} must be a list, not {value!r}")
    return value


def _texts(
    where: str,
    doc: Mapping[str, Any],
    name: str,
    allowed: tuple[str, ...],
    *,
    default: tuple[str, ...] | None = None,
    prefix: str = "",
) -> tuple[str, ...]:
    if name not in doc and default is not None:
        return default
    items = _list(where, doc, name, prefix)
    for item in items:
        if item not in allowed:
            raise SeccConfigError(f"{where}: {prefix}{name}: {item!r} is not one of {', '.join(allowed)}")
    if not items or len(set(items)) != len(items):
        raise SeccConfigError(f"{where}: {prefix}{name} must name each of {', '.join(allowed)} at most once")
    return tuple(items)


def _path(where: str, key: str, value: Any, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise SeccConfigError(f"{where}: {key} must be a file name, not {value!r}")
    path = Path(value)
    return path if path.is_absolute() else base / path
