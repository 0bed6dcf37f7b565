"""Strict X.509 verification through the daemon, the same on every interpreter
(esl_audio_stream/ws/tls.py sets ssl.VERIFY_X509_STRICT, which Python 3.13 sets by default): a
private CA made the old way -- a CA certificate without keyUsage, as `openssl req -x509` used to
make one -- is refused with the error event's code 9 (SSL error) and OpenSSL's reason, and the same
CA certificate re-issued by the README's own commands (same key, subject and serial, the proper
extensions), with the server's certificate untouched, makes the same server verify. Real TLS on
127.0.0.1: tests/wspeer.py's peer behind an `ssl` context; certificates made at test time."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import gevent
import pytest
from conftest import wait_until
from helpers.calls import originate
from pki import (
    CA_EXTENSIONS,
    OLD_CA_EXTENSIONS,
    PKIUnavailable,
    make_ca,
    make_leaf,
    server_extensions,
)
from websockets.asyncio.server import serve
from wspeer import WSPeer

from esl_audio_stream.app import events
from esl_audio_stream.ws.tls import clear_cache

OK = "+OK Success\n"

README = Path(__file__).resolve().parent.parent / "README.md"


def run_readme_fix(directory: Path) -> Path:
    """The README's commands that re-issue ca.pem with ca.key as ca-new.pem, run as written in
    `directory`: what the README tells an operator works."""
    blocks = re.findall(r"```sh\n(.*?)\n *```", README.read_text(), re.S)
    fix = [b for b in blocks if "-out ca-new.pem" in b]
    assert len(fix) == 1, "the README's re-issuing commands are gone"
    subprocess.run(["sh", "-e", "-c", textwrap.dedent(fix[0])], cwd=directory, check=True,
                   capture_output=True, timeout=60)
    assert (directory / "ca-v3.ext").read_text() == CA_EXTENSIONS  # as tests/pki.py makes CAs
    return directory / "ca-new.pem"


class TLSPeer(WSPeer):
    """tests/wspeer.py's WebSocket peer, over TLS with this certificate (wss://)."""

    def __init__(self, cert: str, key: str) -> None:
        super().__init__()
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)

    def url(self, path: str = "/") -> str:
        return f"wss://{self.host}:{self.port}{path}"

    async def _main(self) -> None:
        import asyncio

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._handler, self.host, self.want_port, compression=self.compression,
                         max_size=None, ssl=self.context) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()


@pytest.fixture(autouse=True)
def _fresh_tls_cache() -> Any:
    clear_cache()  # contexts are cached by file signature: no test sees another's
    yield
    clear_cache()


def call_trusting(esl, ca: str, *more: str) -> str:
    """A parked call whose streams trust `ca` (and take the other STREAM_* `more`: NAME VALUE)."""
    esl.subscribe("CUSTOM", events.CONNECT, events.DISCONNECT, events.ERROR)
    uuid = originate(esl)
    for setting in (f"STREAM_TLS_CA_FILE {ca}", *more):
        assert esl.api(f"uuid_setvar {uuid} {setting}").startswith("+OK")
    return uuid


def stream_events(esl, uuid: str) -> list[tuple[str, Any]]:
    """(subclass, body's message or status) of this stream's connect and error events."""
    return [(e.subclass, json.loads(e.body).get("message", json.loads(e.body)["status"]))
            for e in esl.seen if e.subclass in (events.CONNECT, events.ERROR)
            and e.get(events.STREAM_UUID_HEADER) == uuid]


def start_refused(esl, daemon, uuid: str, url: str) -> tuple[str, dict]:
    """Start a stream that cannot connect: (its -ERR answer, its one error event's message)."""
    answer = daemon.execute(f"{uuid} start {url} mono 8k")
    assert answer.startswith(f"-ERR cannot connect to {url}: "), answer
    assert wait_until(lambda: stream_events(esl, uuid), 3), "no mod_audio_stream::error event"
    gevent.sleep(0.05)
    found = stream_events(esl, uuid)
    assert [s for s, _ in found] == [events.ERROR], found
    return answer, found[0][1]


def _identity(cert: str) -> list[str]:
    """What must not change when a CA certificate is re-issued: subject, serial, public key."""
    done = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-subject", "-serial",
                           "-pubkey"], capture_output=True, text=True, check=True, timeout=30)
    return done.stdout.splitlines()


def _extensions(cert: str) -> str:
    return subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-ext",
                           "basicConstraints,keyUsage"], capture_output=True, text=True,
                          check=True, timeout=30).stdout


@pytest.fixture
def old_ca(tmp_path: Path) -> tuple[str, str, str]:
    """(CA certificate, server certificate, server key): an old-style private CA (its key
    ca.key next to its ca.pem) and a server certificate it signed."""
    try:
        ca = make_ca(tmp_path, "ca", OLD_CA_EXTENSIONS, subject="/O=Acme/CN=Acme private CA")
        server = make_leaf(tmp_path, "server", "localhost",
                           server_extensions("localhost", "127.0.0.1"))
    except (OSError, subprocess.CalledProcessError, PKIUnavailable) as exc:
        pytest.skip(f"openssl CLI not usable: {exc}")
    return ca, *server


def test_an_old_private_ca_is_refused_and_reissuing_it_fixes_it(esl, daemon, old_ca):
    ca, server_cert, server_key = old_ca
    assert "Key Usage" not in _extensions(ca) and "CA:TRUE" in _extensions(ca)
    peer = TLSPeer(server_cert, server_key).start()
    try:
        uuid = call_trusting(esl, ca)
        answer, err = start_refused(esl, daemon, uuid, peer.url())
        assert err["code"] == events.WS_SSL_ERROR == 9
        assert err["error"].startswith("certificate verification failed: ")
        assert "CA cert does not include key usage extension" in err["error"]
        assert answer.endswith(err["error"] + "\n")
        assert peer.connections == []  # refused at the handshake

        # The operator re-issues the CA certificate with its key and puts it where the old one
        # was; the same server (same peer, same certificate) and the daemon keep running.
        before = _identity(ca)
        os.replace(run_readme_fix(Path(ca).parent), ca)
        assert _identity(ca) == before
        assert "Certificate Sign, CRL Sign" in _extensions(ca)

        assert daemon.execute(f"{uuid} start {peer.url('/again')} mono 8k") == OK
        conn = peer.wait_connection()
        assert conn.path == "/again"
        assert wait_until(lambda: len(conn.binary) >= 10, 5)
        assert [s for s, _ in stream_events(esl, uuid)] == [events.ERROR, events.CONNECT]
        esl.api(f"uuid_kill {uuid}")
    finally:
        peer.stop()


def test_the_hostname_switch_does_not_lift_the_strict_checks(esl, daemon, old_ca):
    """STREAM_TLS_DISABLE_HOSTNAME_VALIDATION skips the name only: an old CA is still refused.
    (STREAM_TLS_CA_FILE=NONE, no verification at all, is the only way around; see README.)"""
    ca, server_cert, server_key = old_ca
    peer = TLSPeer(server_cert, server_key).start()
    try:
        uuid = call_trusting(esl, ca, "STREAM_TLS_DISABLE_HOSTNAME_VALIDATION true")
        _, err = start_refused(esl, daemon, uuid, peer.url())
        assert err["code"] == events.WS_SSL_ERROR
        assert "CA cert does not include key usage extension" in err["error"]
        esl.api(f"uuid_kill {uuid}")
    finally:
        peer.stop()
