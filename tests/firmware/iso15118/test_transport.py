"""The SECC's TCP and TLS servers: TLS contexts from configured files, one connection at a time, V2GTP
errors closing the connection, and SDP + TCP / TLS 1.2 / TLS 1.3 end to end over a veth pair in a
private network namespace (the server on secc0, the EV on ev0)."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware.iso15118.sdp import SdpOffer, SdpResponse, SdpServer, Security, discover
from firmware.iso15118.transport import (
    DYNAMIC_PORT_FIRST,
    DYNAMIC_PORT_LAST,
    ClientAuth,
    InterfaceError,
    SeccServer,
    TlsConfigError,
    TlsFiles,
    TlsProfile,
    V2gConnection,
    tls_context,
)
from firmware.iso15118.v2gtp import (
    Iso20PayloadType,
    Message,
    V2gtpError,
    encode,
    read_message,
)
from tests.netns import EV_IF, SECC_IF, run_in_netns

# --- a small PKI like the V2G one: root -> sub-CA -> SECC leaf; OEM root -> vehicle leaf --------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "T")])


def _certificate(
    cn: str, key: ec.EllipticCurvePrivateKey, issuer_cn: str, issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    digest = hashes.SHA512() if isinstance(issuer_key.curve, ec.SECP521R1) else hashes.SHA256()
    usage = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    usage.update({"key_cert_sign": ca, "crl_sign": ca, "digital_signature": not ca, "key_agreement": not ca})
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(issuer_cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**usage), critical=True)
        .sign(issuer_key, digest)
    )


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_pki(directory: Path, curve: ec.EllipticCurve) -> Path:
    """Root, sub-CA and SECC leaf; OEM root and vehicle leaf, all on ``curve``, as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = {name: ec.generate_private_key(curve) for name in ("root", "sub", "secc", "oem", "vehicle")}
    root = _certificate("V2G Root", keys["root"], "V2G Root", keys["root"], ca=True)
    sub = _certificate("CPO Sub-CA", keys["sub"], "V2G Root", keys["root"], ca=True)
    secc = _certificate("SECC", keys["secc"], "CPO Sub-CA", keys["sub"], ca=False)
    oem = _certificate("OEM Root", keys["oem"], "OEM Root", keys["oem"], ca=True)
    vehicle = _certificate("Vehicle", keys["vehicle"], "OEM Root", keys["oem"], ca=False)
    (directory / "v2g_root.pem").write_bytes(_pem(root))
    (directory / "secc_chain.pem").write_bytes(_pem(secc, sub))
    (directory / "secc.key").write_bytes(_key_pem(keys["secc"]))
    (directory / "oem_root.pem").write_bytes(_pem(oem))
    (directory / "vehicle_chain.pem").write_bytes(_pem(vehicle))
    (directory / "vehicle.key").write_bytes(_key_pem(keys["vehicle"]))
    return directory


def _files(pki: Path, *, trust: bool = False) -> TlsFiles:
    return TlsFiles(pki / "secc_chain.pem", pki / "secc.key", trust_anchors=pki / "oem_root.pem" if trust else None)


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("pki")
    make_pki(base / "iso2", ec.SECP256R1())
    make_pki(base / "iso20", ec.SECP521R1())
    return base


# --- TLS contexts from configuration -----------------------------------------------------------

PROFILES = [
    (TlsProfile.ISO2, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2, ssl.CERT_NONE),
    (TlsProfile.ISO20, ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3, ssl.CERT_REQUIRED),
    (TlsProfile.ISO2_AND_ISO20, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3, ssl.CERT_OPTIONAL),
]


@pytest.mark.parametrize(("profile", "minimum", "maximum", "verify"), PROFILES)
def test_tls_context_per_profile(
    pki_dir: Path, profile: TlsProfile, minimum: ssl.TLSVersion, maximum: ssl.TLSVersion, verify: ssl.VerifyMode
) -> None:
    ctx = tls_context(_files(pki_dir / "iso2", trust=True), profile)
    assert (ctx.minimum_version, ctx.maximum_version, ctx.verify_mode) == (minimum, maximum, verify)
    tls12_suites = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    if profile is not TlsProfile.ISO20:
        # ISO 15118-2 Table 7 as far as OpenSSL 3 has it (no static ECDH suites).
        assert tls12_suites == ["ECDHE-ECDSA-AES128-SHA256"]


@pytest.mark.parametrize("auth", [ClientAuth.NONE, ClientAuth.OPTIONAL, ClientAuth.REQUIRED])
def test_client_auth_is_configurable(pki_dir: Path, auth: ClientAuth) -> None:
    ctx = tls_context(_files(pki_dir / "iso20", trust=True), TlsProfile.ISO20, client_auth=auth)
    expected = {ClientAuth.NONE: ssl.CERT_NONE, ClientAuth.OPTIONAL: ssl.CERT_OPTIONAL}
    assert ctx.verify_mode == expected.get(auth, ssl.CERT_REQUIRED)


def test_tls_configuration_errors_name_the_file(pki_dir: Path, tmp_path: Path) -> None:
    iso2 = pki_dir / "iso2"
    with pytest.raises(TlsConfigError, match=r"missing\.pem does not exist"):
        tls_context(TlsFiles(tmp_path / "missing.pem", iso2 / "secc.key"), TlsProfile.ISO2)
    with pytest.raises(TlsConfigError, match="cannot load TLS certificate"):
        tls_context(TlsFiles(iso2 / "secc_chain.pem", iso2 / "vehicle.key"), TlsProfile.ISO2)  # key of another cert
    with pytest.raises(TlsConfigError, match="needs trust anchors"):
        tls_context(_files(iso2), TlsProfile.ISO20)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(TlsConfigError, match=r"junk\.pem"):
        tls_context(TlsFiles(iso2 / "secc_chain.pem", iso2 / "secc.key", trust_anchors=junk), TlsProfile.ISO20)


def test_a_secc_needs_a_tcp_or_a_tls_server() -> None:
    async def handler(conn: V2gConnection) -> None:
        return None

    with pytest.raises(ValueError, match="TCP or a TLS"):
        SeccServer("secc0", handler, tcp=False)


def test_starting_on_a_missing_interface_is_a_clear_error() -> None:
    async def handler(conn: V2gConnection) -> None:
        return None

    with pytest.raises(InterfaceError, match="no-such-if0"):
        asyncio.run(SeccServer("no-such-if0", handler).start())


# --- end to end inside a namespace (these functions run in the child, see tests/netns.py) ------


class Recorder:
    """A handler that answers every message with its payload reversed and notes what happened."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.connections: list[V2gConnection] = []

    async def __call__(self, conn: V2gConnection) -> None:
        self.connections.append(conn)
        while True:
            try:
                message = await conn.receive(timeout_s=5.0)
            except V2gtpError as exc:
                self.events.append(type(exc).__name__)
                return
            if message.payload == b"boom":
                raise RuntimeError("a handler bug")
            await conn.send(Iso20PayloadType.MAINSTREAM, message.payload[::-1])


async def _connect(
    sockaddr: tuple[str, int, int, int], tls: ssl.SSLContext | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, sockaddr)
    return await asyncio.open_connection(sock=sock, ssl=tls, server_hostname="secc" if tls else None)


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> Message:
    writer.write(encode(0x8001, payload))
    await writer.drain()
    return await read_message(reader, max_payload=1024, timeout_s=2.0)


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 2.0) == b""
    except (ConnectionError, ssl.SSLError):
        return True


async def _until_idle(secc: SeccServer) -> None:
    for _ in range(200):
        if not secc.busy:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the SECC stayed busy")


@asynccontextmanager
async def _secc_with_sdp(handler: Recorder, **kwargs: Any) -> AsyncIterator[SeccServer]:
    async with SeccServer(SECC_IF, handler, **kwargs) as secc:
        offer = SdpOffer(secc.address.address, secc.tcp_port, secc.tls_port)
        async with SdpServer(SECC_IF, offer):
            yield secc


async def netns_tcp_session() -> None:
    handler = Recorder()
    async with asyncio.timeout(20), _secc_with_sdp(handler) as secc:
        assert secc.tcp_port is not None and secc.tls_port is None
        assert DYNAMIC_PORT_FIRST <= secc.tcp_port <= DYNAMIC_PORT_LAST

        # The EV asks for TLS, the SECC offers none: SDP announces plain TCP and the EV goes on.
        found = await discover(EV_IF, security=Security.TLS)
        assert found == SdpResponse(secc.address.address, secc.tcp_port, Security.NONE)
        reader, writer = await _connect(found.sockaddr(EV_IF))
        assert await _exchange(reader, writer, b"hello") == Message(Iso20PayloadType.MAINSTREAM, b"olleh")
        conn = handler.connections[0]
        assert (conn.tls, conn.tls_version, conn.cipher, conn.peer_certificate) == (False, None, None, None)

        # A second EV connection while the first is open is closed at once; the first goes on.
        assert secc.busy
        reader2, _writer2 = await _connect(found.sockaddr(EV_IF))
        assert await _closed_by_server(reader2)
        assert await _exchange(reader, writer, b"still here") == Message(0x8002, b"ereh llits")

        # A header with a wrong version: the connection is closed, the slot freed.
        writer.write(b"\x02\xfd\x80\x01\x00\x00\x00\x01x")
        assert await _closed_by_server(reader)
        await _until_idle(secc)

        # A handler that raises does not take the server down.
        reader, writer = await _connect(found.sockaddr(EV_IF))
        writer.write(encode(0x8001, b"boom"))
        assert await _closed_by_server(reader)
        await _until_idle(secc)

        # Oversize and SDP-over-TCP payloads are refused; a clean close by the EV is an EOF.
        for bad in (b"\x01\xfe\x80\x01\x00\x10\x00\x00", encode(0x9000, b"\x10\x00")):
            reader, writer = await _connect(found.sockaddr(EV_IF))
            assert await _exchange(reader, writer, b"ok") == Message(0x8002, b"ko")
            writer.write(bad)
            assert await _closed_by_server(reader)
            await _until_idle(secc)
        reader, writer = await _connect(found.sockaddr(EV_IF))
        writer.close()
        await _until_idle(secc)
        assert handler.events == [
            "V2gtpVersionError",
            "V2gtpOversizeError",
            "V2gtpPayloadTypeError",
            "V2gtpEofError",
        ]


def _client(pki: Path, *, maximum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3, vehicle: bool = False) -> ssl.SSLContext:
    """The EV's side: it checks the SECC's chain against the V2G root (no host name in V2G)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(pki / "v2g_root.pem")
    ctx.maximum_version = maximum
    if vehicle:
        ctx.load_cert_chain(pki / "vehicle_chain.pem", pki / "vehicle.key")
    return ctx


def _negotiated(writer: asyncio.StreamWriter) -> tuple[str, str]:
    ssl_object = writer.get_extra_info("ssl_object")
    return ssl_object.version(), ssl_object.cipher()[0]


async def netns_tls12_session(pki_dir: str) -> None:
    pki = Path(pki_dir) / "iso2"
    handler = Recorder()
    tls = tls_context(_files(pki), TlsProfile.ISO2)
    async with asyncio.timeout(20), _secc_with_sdp(handler, tcp=False, tls=tls) as secc:
        assert secc.tls_port is not None and secc.tcp_port is None
        # TLS required: even an EV asking for none is sent to the TLS port.
        found = await discover(EV_IF, security=Security.NONE)
        assert found == SdpResponse(secc.address.address, secc.tls_port, Security.TLS)

        reader, writer = await _connect(found.sockaddr(EV_IF), _client(pki))  # the EV offers up to TLS 1.3
        assert _negotiated(writer) == ("TLSv1.2", "ECDHE-ECDSA-AES128-SHA256")
        assert await _exchange(reader, writer, b"tls12") == Message(0x8002, b"21slt")
        conn = handler.connections[0]
        assert (conn.tls_version, conn.cipher, conn.peer_certificate) == ("TLSv1.2", "ECDHE-ECDSA-AES128-SHA256", None)

        # Busy: a second EV is turned away before any handshake.
        with pytest.raises((ConnectionError, ssl.SSLError)):
            await _connect(found.sockaddr(EV_IF), _client(pki))
        writer.close()
        await _until_idle(secc)

        # An EV without the Table 7 suite gets no connection; the server serves the next one.
        narrow = _client(pki, maximum=ssl.TLSVersion.TLSv1_2)
        narrow.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
        with pytest.raises((ConnectionError, ssl.SSLError)):
            await _connect(found.sockaddr(EV_IF), narrow)
        await _until_idle(secc)
        reader, writer = await _connect(found.sockaddr(EV_IF), _client(pki, maximum=ssl.TLSVersion.TLSv1_2))
        assert await _exchange(reader, writer, b"again") == Message(0x8002, b"niaga")
        writer.close()
        await _until_idle(secc)
        assert len(handler.connections) == 2


async def netns_tls13_session(pki_dir: str) -> None:
    pki = Path(pki_dir) / "iso20"
    handler = Recorder()
    tls = tls_context(_files(pki, trust=True), TlsProfile.ISO20)  # client certificate required
    async with asyncio.timeout(20), _secc_with_sdp(handler, tcp=False, tls=tls) as secc:
        found = await discover(EV_IF, security=Security.TLS)
        assert found.port == secc.tls_port and found.security is Security.TLS

        reader, writer = await _connect(found.sockaddr(EV_IF), _client(pki, vehicle=True))
        assert _negotiated(writer) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384")
        assert await _exchange(reader, writer, b"tls13") == Message(0x8002, b"31slt")
        conn = handler.connections[0]
        assert (conn.tls_version, conn.cipher) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384")
        assert conn.peer_certificate is not None
        assert conn.peer_certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Vehicle"
        writer.close()
        await _until_idle(secc)

        # Without a vehicle certificate (TLS 1.3 lets the client finish first; the server then
        # refuses), and with TLS 1.2 only: no connection reaches the handler.
        for client in (_client(pki), _client(pki, maximum=ssl.TLSVersion.TLSv1_2, vehicle=True)):
            try:
                reader, writer = await _connect(found.sockaddr(EV_IF), client)
            except (ConnectionError, ssl.SSLError):
                pass
            else:
                assert await _closed_by_server(reader)
            await _until_idle(secc)
        assert len(handler.connections) == 1

    # One port for both generations, client certificate optional: a -2 EV over TLS 1.2 without a
    # certificate and a -20 EV over TLS 1.3 with one both get in; the session layer sees which.
    pki2 = Path(pki_dir) / "iso2"
    handler = Recorder()
    files = TlsFiles(pki2 / "secc_chain.pem", pki2 / "secc.key", trust_anchors=pki2 / "oem_root.pem")
    mixed = tls_context(files, TlsProfile.ISO2_AND_ISO20)
    async with asyncio.timeout(20), SeccServer(SECC_IF, handler, tcp=False, tls=mixed) as secc:
        assert secc.tls_port is not None
        where = secc.address.sockaddr(secc.tls_port)
        where = (where[0], where[1], 0, socket.if_nametoindex(EV_IF))
        for client, version in (
            (_client(pki2, maximum=ssl.TLSVersion.TLSv1_2), "TLSv1.2"),
            (_client(pki2, vehicle=True), "TLSv1.3"),
        ):
            reader, writer = await _connect(where, client)
            assert _negotiated(writer)[0] == version
            assert await _exchange(reader, writer, b"x") == Message(0x8002, b"x")
            writer.close()
            await _until_idle(secc)
        assert [(c.tls_version, c.peer_certificate is not None) for c in handler.connections] == [
            ("TLSv1.2", False),
            ("TLSv1.3", True),
        ]


def test_sdp_then_tcp_session_over_a_veth_pair() -> None:
    proc = run_in_netns(__name__, "netns_tcp_session", timeout=40)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_sdp_then_tls12_session_over_a_veth_pair(pki_dir: Path) -> None:
    proc = run_in_netns(__name__, "netns_tls12_session", str(pki_dir), timeout=40)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_sdp_then_tls13_mutual_session_over_a_veth_pair(pki_dir: Path) -> None:
    proc = run_in_netns(__name__, "netns_tls13_session", str(pki_dir), timeout=40)
    assert proc.returncode == 0, proc.stdout + proc.stderr
