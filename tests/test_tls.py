"""ssl_context_for (app/tls.py over ws/tls.py) against real certificates made by the openssl CLI
at test time, checked with real TLS handshakes against an `ssl` server on 127.0.0.1 (in a thread)
that can demand a client certificate, and once through WebSocketConnection to a `websockets` wss
server."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gevent
import pytest
from pki import PKIUnavailable, make_intermediate, make_leaf, make_pki, openssl, server_extensions
from websockets.asyncio.server import serve

from esl_audio_stream.app.settings import SettingsError, StreamSettings, settings_from_variables
from esl_audio_stream.app.tls import ssl_context_for
from esl_audio_stream.ws.connection import WebSocketConnection
from esl_audio_stream.ws.errors import WSErrorCode
from esl_audio_stream.ws.tls import TLSFileError, clear_cache, make_ssl_context


@dataclass
class PKI:
    dir: Path
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_key: str  # a valid key that matches no certificate here
    encrypted_key: str
    junk: str
    other_ca: str  # a CA that signed nothing here


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    d = tmp_path_factory.mktemp("pki")
    try:
        base = make_pki(d)
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-out", str(d / "other.key"))
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-aes-128-cbc", "-pass", "pass:secret", "-out", str(d / "enc.key"))
    except PKIUnavailable as exc:
        pytest.skip(str(exc))
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"openssl CLI failed: {exc.stderr.decode(errors='replace')[:300]}")
    (d / "junk.pem").write_text("this is not PEM\n")
    return PKI(d, base.ca, base.server_cert, base.server_key, base.client_cert, base.client_key,
               str(d / "other.key"), str(d / "enc.key"), str(d / "junk.pem"), base.other_ca)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Any:
    clear_cache()
    yield
    clear_cache()


@dataclass
class Result:
    ok: bool
    client_cn: str | None = None
    error: str = ""


@dataclass
class TLSServer:
    """Accepts TLS connections on 127.0.0.1 in a thread, records each handshake's outcome."""

    pki: PKI
    require_client_cert: bool = False
    results: list[Result] = field(default_factory=list)

    def __post_init__(self) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        if self.require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.pki.ca)
        self._ctx = ctx
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with self._ctx.wrap_socket(conn, server_side=True) as tls:
                    peer = tls.getpeercert()
                    cn = dict(x[0] for x in peer["subject"])["commonName"] if peer else None
                    tls.sendall(b"hello")
                    result = Result(True, cn)
            except (ssl.SSLError, OSError) as exc:
                conn.close()
                result = Result(False, error=str(exc))
            with self._done:
                self.results.append(result)
                self._done.notify_all()

    def wait_result(self, n: int) -> Result:
        with self._done:
            assert self._done.wait_for(lambda: len(self.results) >= n, 5), "no handshake result"
        return self.results[n - 1]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@pytest.fixture
def server(pki: PKI) -> Any:
    srv = TLSServer(pki)
    yield srv
    srv.close()


@pytest.fixture
def mtls_server(pki: PKI) -> Any:
    srv = TLSServer(pki, require_client_cert=True)
    yield srv
    srv.close()


def handshake(ctx: ssl.SSLContext, port: int, hostname: str = "localhost") -> bytes:
    """Connect, handshake, read the server's greeting (TLS 1.3 reports a refused client
    certificate only on the first read)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=hostname) as tls:
        return tls.recv(5)


def settings(**kw: Any) -> StreamSettings:
    return StreamSettings(**kw)


# --------------------------------------------------------------------------- the contexts


def test_system_default_verifies_chain_and_hostname() -> None:
    ctx = ssl_context_for(StreamSettings())
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    system_bundle = ssl.get_default_verify_paths().cafile
    if system_bundle and os.path.exists(system_bundle):
        assert ctx.cert_store_stats()["x509_ca"] > 0  # the system store was loaded


def test_none_verifies_nothing() -> None:
    ctx = ssl_context_for(settings(tls_ca="NONE"))
    assert ctx.verify_mode == ssl.CERT_NONE
    assert ctx.check_hostname is False


def test_ca_file_loaded(pki: PKI) -> None:
    ctx = ssl_context_for(settings(tls_ca=pki.ca))
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    assert ctx.cert_store_stats()["x509_ca"] == 1
    subjects = [dict(x[0] for x in c["subject"])["commonName"] for c in ctx.get_ca_certs()]
    assert subjects == ["esl-audio-stream test ca"]


def test_hostname_check_off_still_verifies_the_chain(pki: PKI) -> None:
    ctx = ssl_context_for(settings(tls_ca=pki.ca, tls_check_hostname=False))
    assert ctx.check_hostname is False
    assert ctx.verify_mode == ssl.CERT_REQUIRED


def test_from_channel_variables(pki: PKI) -> None:
    s = settings_from_variables({
        "STREAM_TLS_CA_FILE": pki.ca,
        "STREAM_TLS_CERT_FILE": pki.client_cert,
        "STREAM_TLS_KEY_FILE": pki.client_key,
        "STREAM_TLS_DISABLE_HOSTNAME_VALIDATION": "true",
    })
    ctx = ssl_context_for(s)
    assert (ctx.verify_mode, ctx.check_hostname) == (ssl.CERT_REQUIRED, False)


@pytest.mark.parametrize("ca", ["SYSTEM", "file"])
def test_verification_is_strict_on_every_interpreter(pki: PKI, ca: str) -> None:
    """The flags Python 3.13's create_default_context() sets, set on 3.11 too."""
    ctx = ssl_context_for(settings(tls_ca=pki.ca if ca == "file" else ca))
    assert ctx.verify_flags & ssl.VERIFY_X509_STRICT
    assert ctx.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    assert not ssl_context_for(settings(tls_ca="NONE")).verify_flags & ssl.VERIFY_X509_STRICT


# --------------------------------------------------------------------------- real handshakes


def test_handshake_with_ca_file(pki: PKI, server: TLSServer) -> None:
    assert handshake(ssl_context_for(settings(tls_ca=pki.ca)), server.port) == b"hello"
    assert server.wait_result(1).ok


def test_an_intermediate_ca_in_the_ca_file_is_enough(pki: PKI) -> None:
    """VERIFY_X509_PARTIAL_CHAIN: a server certificate from an intermediate CA verifies against
    a CA file holding that intermediate alone (not its root), on every interpreter."""
    try:
        intermediate = make_intermediate(pki.dir, "intermediate")
        cert, key = make_leaf(pki.dir, "via-intermediate", "localhost",
                              server_extensions("localhost", "127.0.0.1"), ca="intermediate")
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"openssl CLI failed: {exc.stderr.decode(errors='replace')[:300]}")
    srv = TLSServer(replace(pki, server_cert=cert, server_key=key))
    try:
        assert handshake(ssl_context_for(settings(tls_ca=intermediate)), srv.port) == b"hello"
        assert srv.wait_result(1).ok
        with pytest.raises(ssl.SSLCertVerificationError):  # ... and it is still a CA check
            handshake(ssl_context_for(settings(tls_ca=pki.other_ca)), srv.port)
    finally:
        srv.close()


def test_system_store_rejects_our_private_ca(server: TLSServer) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(ssl_context_for(StreamSettings()), server.port)


def test_wrong_ca_rejects(pki: PKI, server: TLSServer) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(ssl_context_for(settings(tls_ca=pki.other_ca)), server.port)


def test_none_accepts_an_untrusted_server_under_any_name(server: TLSServer) -> None:
    ctx = ssl_context_for(settings(tls_ca="NONE"))
    assert handshake(ctx, server.port, hostname="not-the-name.example") == b"hello"


def test_wrong_hostname_rejected_unless_validation_disabled(pki: PKI, server: TLSServer) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        handshake(ssl_context_for(settings(tls_ca=pki.ca)), server.port, "wrong.example")
    lax = ssl_context_for(settings(tls_ca=pki.ca, tls_check_hostname=False))
    assert handshake(lax, server.port, "wrong.example") == b"hello"
    # ... but only the name is skipped: an untrusted chain still fails.
    lax_wrong_ca = ssl_context_for(settings(tls_ca=pki.other_ca, tls_check_hostname=False))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(lax_wrong_ca, server.port, "wrong.example")


def test_client_certificate_presented(pki: PKI, mtls_server: TLSServer) -> None:
    ctx = ssl_context_for(
        settings(tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key)
    )
    assert handshake(ctx, mtls_server.port) == b"hello"
    result = mtls_server.wait_result(1)
    assert result.ok and result.client_cn == "client-1"


def test_no_client_certificate_refused_by_mtls_server(pki: PKI, mtls_server: TLSServer) -> None:
    with pytest.raises((ssl.SSLError, OSError)):
        handshake(ssl_context_for(settings(tls_ca=pki.ca)), mtls_server.port)
    result = mtls_server.wait_result(1)
    assert not result.ok and "certificate" in result.error.lower()


def test_websocket_client_uses_the_context(pki: PKI) -> None:
    """wss through the project's client (gevent's SSLSocket) to a websockets server demanding a
    client certificate: the context works there too, and the peer sees our certificate."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(pki.ca)
    peers: list[str] = []
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def handler(ws: Any) -> None:
        cert = ws.transport.get_extra_info("peercert")
        peers.append(dict(x[0] for x in cert["subject"])["commonName"])
        await ws.send("hi " + ws.request.headers.get("X-Tenant", "?"))
        await ws.wait_closed()

    async def main() -> None:
        state["loop"] = asyncio.get_running_loop()
        state["stop"] = state["loop"].create_future()
        async with serve(handler, "127.0.0.1", 0, ssl=server_ctx) as srv:
            state["port"] = srv.sockets[0].getsockname()[1]
            ready.set()
            await state["stop"]

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(5)
    try:
        s = settings_from_variables({
            "STREAM_TLS_CA_FILE": pki.ca,
            "STREAM_TLS_CERT_FILE": pki.client_cert,
            "STREAM_TLS_KEY_FILE": pki.client_key,
            "STREAM_EXTRA_HEADERS": '{"X-Tenant": "acme"}',
        })
        texts: list[str] = []
        client = WebSocketConnection(
            f"wss://localhost:{state['port']}/", on_text=texts.append, on_binary=lambda b: None,
            on_close=lambda c, r: None, headers=s.extra_headers, ssl_context=ssl_context_for(s),
        )
        client.connect()
        with gevent.Timeout(5, AssertionError("no text from the wss server")):
            while not texts:
                gevent.sleep(0.01)
        client.close()
        assert texts == ["hi acme"]
        assert peers == ["client-1"]
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set_result, None)
        thread.join(5)


# --------------------------------------------------------------------------- errors


def test_missing_ca_file() -> None:
    with pytest.raises(SettingsError) as info:
        ssl_context_for(settings(tls_ca="/nonexistent/ca.pem"))
    assert str(info.value) == (
        "STREAM_TLS_CA_FILE: cannot read /nonexistent/ca.pem: No such file or directory"
    )


def test_ca_file_that_is_not_pem(pki: PKI) -> None:
    with pytest.raises(SettingsError, match=r"^STREAM_TLS_CA_FILE: no usable PEM certificate in "):
        ssl_context_for(settings(tls_ca=pki.junk))


def test_ca_file_that_is_a_directory(pki: PKI) -> None:
    with pytest.raises(SettingsError, match=r"^STREAM_TLS_CA_FILE: cannot read .*: Is a directory"):
        ssl_context_for(settings(tls_ca=str(pki.dir)))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_ca_file(pki: PKI, tmp_path: Path) -> None:
    path = tmp_path / "ca.pem"
    path.write_bytes(Path(pki.ca).read_bytes())
    path.chmod(0)
    with pytest.raises(SettingsError, match=r"^STREAM_TLS_CA_FILE: cannot read .*: Permission"):
        ssl_context_for(settings(tls_ca=str(path)))


def test_missing_client_cert_and_key(pki: PKI) -> None:
    with pytest.raises(SettingsError, match=r"^STREAM_TLS_CERT_FILE: cannot read /nope\.pem: No"):
        ssl_context_for(settings(tls_ca=pki.ca, tls_cert="/nope.pem", tls_key=pki.client_key))
    with pytest.raises(SettingsError, match=r"^STREAM_TLS_KEY_FILE: cannot read /nope\.key: No"):
        ssl_context_for(settings(tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key="/nope.key"))


def test_only_one_of_cert_and_key(pki: PKI) -> None:
    with pytest.raises(SettingsError, match="STREAM_TLS_KEY_FILE is not: give both or neither"):
        ssl_context_for(settings(tls_cert=pki.client_cert))
    with pytest.raises(SettingsError, match="STREAM_TLS_CERT_FILE is not: give both or neither"):
        ssl_context_for(settings(tls_key=pki.client_key))


def test_bad_client_cert_and_key_contents(pki: PKI) -> None:
    with pytest.raises(SettingsError, match=r"^STREAM_TLS_CERT_FILE: no usable PEM certificate"):
        ssl_context_for(settings(tls_cert=pki.junk, tls_key=pki.client_key, tls_ca="NONE"))
    with pytest.raises(SettingsError, match=r"^STREAM_TLS_KEY_FILE: no usable PEM private key"):
        ssl_context_for(settings(tls_cert=pki.client_cert, tls_key=pki.junk, tls_ca="NONE"))
    with pytest.raises(SettingsError, match=r"^STREAM_TLS_KEY_FILE: the key in .* does not match"):
        ssl_context_for(settings(tls_cert=pki.client_cert, tls_key=pki.other_key, tls_ca="NONE"))


def test_encrypted_key_refused_without_prompting(pki: PKI) -> None:
    with pytest.raises(SettingsError, match=r"^STREAM_TLS_KEY_FILE: the key in .* is encrypted"):
        ssl_context_for(
            settings(tls_cert=pki.client_cert, tls_key=pki.encrypted_key, tls_ca="NONE")
        )


# --------------------------------------------------------------------------- sharing


def test_same_settings_share_one_context(pki: PKI) -> None:
    s = settings(tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key)
    first = ssl_context_for(s)
    assert ssl_context_for(s) is first
    assert ssl_context_for(settings(tls_ca=pki.ca)) is not first
    assert ssl_context_for(replace(s, tls_check_hostname=False)) is not first


def test_changed_file_rebuilds_and_missing_file_is_still_an_error(pki: PKI, tmp_path: Path) -> None:
    path = tmp_path / "bundle.pem"
    path.write_bytes(Path(pki.other_ca).read_bytes())
    s = settings(tls_ca=str(path))
    first = ssl_context_for(s)
    assert [c["subject"][0][0][1] for c in first.get_ca_certs()] == [
        "esl-audio-stream test other-ca"
    ]
    path.write_bytes(Path(pki.other_ca).read_bytes() + Path(pki.ca).read_bytes())  # rotated
    second = ssl_context_for(s)
    assert second is not first
    assert second.cert_store_stats()["x509_ca"] == 2
    path.unlink()
    with pytest.raises(SettingsError, match=r"^STREAM_TLS_CA_FILE: cannot read"):
        ssl_context_for(s)


# --------------------------------------------------------------------------- the ws level


def test_ws_level_errors_say_which_file_and_what_is_wrong(pki: PKI) -> None:
    """ws/tls.py knows no settings: its error names the file's role; app/tls.py maps that role to
    the STREAM_TLS_* variable (the messages above)."""
    with pytest.raises(TLSFileError) as info:
        make_ssl_context(ca="/nonexistent/ca.pem")
    err = info.value
    assert (err.which, err.code) == ("ca", WSErrorCode.TLS_INIT_FAILED)
    assert err.message == "CA file: cannot read /nonexistent/ca.pem: No such file or directory"
    with pytest.raises(TLSFileError) as info:
        make_ssl_context(ca="NONE", cert=pki.junk, key=pki.client_key)
    assert info.value.which == "cert"
    with pytest.raises(TLSFileError) as info:
        make_ssl_context(ca="NONE", cert=pki.client_cert, key=pki.other_key)
    assert info.value.which == "key" and "does not match" in info.value.detail
    with pytest.raises(TLSFileError) as info:
        make_ssl_context(cert=pki.client_cert)  # a certificate without its key
    assert info.value.which == "key"


def test_ws_level_context_from_plain_arguments(pki: PKI, server: TLSServer) -> None:
    ctx = make_ssl_context(ca=pki.ca, check_hostname=False)
    assert (ctx.verify_mode, ctx.check_hostname) == (ssl.CERT_REQUIRED, False)
    assert make_ssl_context(ca=pki.ca, check_hostname=False) is ctx  # shared
    assert handshake(ctx, server.port, "any.name.example") == b"hello"
