"""The production WebSocket client end to end through the daemon: TLS (CA file, system store,
hostname checks, client certificates, missing files), permessage-deflate as it really crosses the
wire, heartbeats against a server that never answers pings, and backpressure from an endpoint
that stops reading while another call keeps streaming.

Simulator call -> `daemon.execute("<uuid> start wss://...")` -> a real server on 127.0.0.1:
`websockets` (in a thread, with TLS where needed), or a raw one on gevent where the test needs a
server that misbehaves in a way `websockets` will not (never pongs, stops reading).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import random
import re
import socket
import ssl
import struct
import termios
import threading
import zlib
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

import gevent
import gevent.event
import pytest
from conftest import wait_until
from gevent import socket as gsocket
from gevent.pool import Pool
from gevent.server import StreamServer
from pki import PKI, PKIUnavailable, make_pki
from websockets.asyncio.server import serve
from wspeer import WSPeer

from esl_audio_stream.app import events
from esl_audio_stream.media.unicast import PortPool
from esl_audio_stream.ws.handshake import SEND_BUFFER
from esl_audio_stream.ws.tls import clear_cache

OK = "+OK Success\n"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# --------------------------------------------------------------------------- fixtures, helpers


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    try:
        return make_pki(tmp_path_factory.mktemp("pki"))
    except PKIUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(autouse=True)
def _own_ports(daemon) -> None:
    """FreeSWITCH-side ports from a random block of the daemon's range instead of its first
    ports: other test runs on this machine (each with its own simulator and daemon, all
    starting at 12000) would otherwise take the same local-port, and the call's unicast would
    fail to bind ("Address already in use")."""
    cfg = daemon.config
    block = random.randrange((cfg.fs_port_max - cfg.fs_port_min + 1) // 50)
    low = cfg.fs_port_min + 50 * block
    daemon.ports = PortPool(low, low + 49)


@pytest.fixture(autouse=True)
def _fresh_tls_cache() -> Any:
    clear_cache()  # contexts are cached by file signature: no test sees another's
    yield
    clear_cache()


def server_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    return ctx


class TLSPeer(WSPeer):
    """WSPeer over TLS; records the subject CN of each connection's client certificate."""

    def __init__(self, context: ssl.SSLContext, **kw: Any) -> None:
        super().__init__(**kw)
        self.context = context
        self.client_cns: list[str | None] = []

    def url(self, path: str = "/") -> str:
        return f"wss://{self.host}:{self.port}{path}"

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._handler, self.host, self.want_port, compression=self.compression,
                         max_size=None, ssl=self.context) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    async def _handler(self, ws: Any) -> None:
        cert = ws.transport.get_extra_info("peercert")
        self.client_cns.append(dict(x[0] for x in cert["subject"])["commonName"] if cert else None)
        await super()._handler(ws)


@pytest.fixture
def tls_peer(pki: PKI) -> Any:
    p = TLSPeer(server_context(pki.server_cert, pki.server_key)).start()
    try:
        yield p
    finally:
        p.stop()


def call_with(esl, variables: str = "", rate: int = 8000) -> str:
    extra = f",{variables}" if variables else ""
    answer = esl.api(f"originate {{channel_rate={rate},sim_record_audio=true{extra}}}"
                     "loopback/1000/default &park()")
    assert answer.startswith("+OK "), answer
    uuid = answer.split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    return uuid


def subscribe(esl) -> None:
    esl.subscribe("CUSTOM", events.CONNECT, events.DISCONNECT, events.ERROR)
    gevent.sleep(0.1)


def stream_events(esl, uuid: str, *subclasses: str) -> list[tuple[str, dict]]:
    """(subclass, body["message"] or body["status"]) of this stream's events, in arrival order."""
    out = []
    for e in esl.seen:
        if e.subclass in subclasses and e.get(events.STREAM_UUID_HEADER) == uuid:
            body = json.loads(e.body)
            out.append((e.subclass, body.get("message", body["status"])))
    return out


def errors(esl, uuid: str) -> list[dict]:
    return [m for _, m in stream_events(esl, uuid, events.ERROR)]


def start_refused(esl, daemon, uuid: str, url: str) -> tuple[str, dict]:
    """Start a stream that cannot connect: (its -ERR answer, its one error event's message)."""
    answer = daemon.execute(f"{uuid} start {url} mono 8k")
    assert answer.startswith(f"-ERR cannot connect to {url}: "), answer
    assert wait_until(lambda: errors(esl, uuid), 3), "no mod_audio_stream::error event"
    gevent.sleep(0.05)
    found = errors(esl, uuid)
    assert len(found) == 1, found
    assert uuid not in daemon.streams and daemon.ports.in_use == 0
    return answer, found[0]


@dataclass
class Frame:
    fin: bool
    rsv1: bool
    opcode: int
    masked: bool
    length: int  # payload bytes on the wire
    payload: bytes  # unmasked


def parse_client_stream(data: bytes) -> tuple[bytes, list[Frame], int]:
    """Split what a client sent into (HTTP request head, complete frames, bytes left over)."""
    end = data.index(b"\r\n\r\n") + 4
    head, pos, frames = data[:end], end, []
    while pos + 2 <= len(data):
        b0, b1 = data[pos], data[pos + 1]
        n, hl = b1 & 0x7F, 2
        if n == 126:
            n, hl = int.from_bytes(data[pos + 2:pos + 4], "big"), 4
        elif n == 127:
            n, hl = int.from_bytes(data[pos + 2:pos + 10], "big"), 10
        ml = 4 if b1 & 0x80 else 0
        if pos + hl + ml + n > len(data):
            break
        mask = data[pos + hl:pos + hl + ml]
        body = data[pos + hl + ml:pos + hl + ml + n]
        if ml:
            key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
            body = (int.from_bytes(body, "big") ^ key).to_bytes(n, "big")
        frames.append(Frame(bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, bool(ml), n, body))
        pos += hl + ml + n
    return head, frames, len(data) - pos


# --------------------------------------------------------------------------- 1. CA file, system


def test_wss_with_the_test_ca_delivers_every_frame(esl, daemon, sim, pki, tls_peer):
    subscribe(esl)
    uuid = call_with(esl, f"STREAM_TLS_CA_FILE={pki.ca}")
    assert daemon.execute(f"{uuid} start {tls_peer.url('/tls')} mono 8k META") == OK
    conn = tls_peer.wait_connection()
    assert conn.path == "/tls"
    assert wait_until(lambda: len(conn.binary) >= 40, 5)
    assert daemon.execute(f"{uuid} stop") == OK
    assert wait_until(conn.closed.is_set, 5)
    assert conn.close_code == 1000
    assert conn.messages[0] == "META"
    assert {len(m) for m in conn.binary} == {320}  # 20 ms of 8 kHz L16, one message each
    # 8 kHz in and out: FreeSWITCH's bytes pass unchanged, so every frame can be accounted for
    sent = bytes(sim.channel(uuid).sent_audio)
    audio = conn.audio
    assert audio == sent[:len(audio)]
    assert len(sent) - len(audio) <= 3 * 320  # only what was in flight at the stop
    assert [s for s, _ in stream_events(esl, uuid, events.CONNECT, events.ERROR)] == [
        events.CONNECT]
    esl.api(f"uuid_kill {uuid}")


def test_system_store_does_not_trust_the_test_ca(esl, daemon, tls_peer):
    subscribe(esl)
    uuid = call_with(esl)  # no STREAM_TLS_CA_FILE: the daemon's default, SYSTEM
    answer, err = start_refused(esl, daemon, uuid, tls_peer.url())
    assert "certificate verification failed" in answer and "unable to get local issuer" in answer
    assert err["code"] == events.WS_SSL_ERROR == 9
    assert "certificate verification failed" in err["error"]
    assert tls_peer.connections == []  # refused at the handshake: no upgrade reached the server
    esl.api(f"uuid_kill {uuid}")


# --------------------------------------------------------------------------- 2. hostname


@pytest.fixture
def wrong_name_peer(pki: PKI) -> Any:
    """Serves a certificate from the test CA for wrong.example, reached as 127.0.0.1."""
    p = TLSPeer(server_context(pki.wrong_cert, pki.wrong_key)).start()
    try:
        yield p
    finally:
        p.stop()


def test_wrong_hostname_is_refused(esl, daemon, pki, wrong_name_peer):
    subscribe(esl)
    uuid = call_with(esl, f"STREAM_TLS_CA_FILE={pki.ca}")
    answer, err = start_refused(esl, daemon, uuid, wrong_name_peer.url())
    assert "IP address mismatch" in answer and "127.0.0.1" in answer
    assert err["code"] == events.WS_SSL_ERROR
    assert wrong_name_peer.connections == []
    esl.api(f"uuid_kill {uuid}")


@pytest.mark.parametrize("variables", [
    "STREAM_TLS_CA_FILE={ca},STREAM_TLS_DISABLE_HOSTNAME_VALIDATION=true",
    "STREAM_TLS_CA_FILE=NONE",
])
def test_wrong_hostname_accepted_when_told(esl, daemon, pki, wrong_name_peer, variables):
    uuid = call_with(esl, variables.format(ca=pki.ca))
    assert daemon.execute(f"{uuid} start {wrong_name_peer.url()} mono 16k") == OK
    conn = wrong_name_peer.wait_connection()
    assert wait_until(lambda: len(conn.binary) >= 10, 5)
    assert {len(m) for m in conn.binary} == {640}
    esl.api(f"uuid_kill {uuid}")


def test_hostname_check_off_still_checks_the_chain(esl, daemon, wrong_name_peer):
    """DISABLE_HOSTNAME_VALIDATION skips the name only: the system store still refuses the CA."""
    subscribe(esl)
    uuid = call_with(esl, "STREAM_TLS_DISABLE_HOSTNAME_VALIDATION=true")
    answer, err = start_refused(esl, daemon, uuid, wrong_name_peer.url())
    assert "unable to get local issuer" in answer
    assert err["code"] == events.WS_SSL_ERROR
    esl.api(f"uuid_kill {uuid}")


# --------------------------------------------------------------------------- 3. client certificate


@pytest.fixture
def mtls_peer(pki: PKI) -> Any:
    p = TLSPeer(server_context(pki.server_cert, pki.server_key, client_ca=pki.ca)).start()
    try:
        yield p
    finally:
        p.stop()


class AlertingTLSServer:
    """A stdlib `ssl` server in a thread that demands a client certificate and, unlike asyncio
    (which drops the connection without flushing its alert), sends the TLS alert, then waits for
    the client to hang up before closing (so no RST can overtake the alert)."""

    def __init__(self, pki: PKI) -> None:
        self._ctx = server_context(pki.server_cert, pki.server_key, client_ca=pki.ca)
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(5)
        self.port = self._sock.getsockname()[1]
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def url(self) -> str:
        return f"wss://127.0.0.1:{self.port}/"

    def _run(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except OSError:
            return
        conn.settimeout(3)
        tls = self._ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            self.errors.append(str(exc))
            # The alert is out. Read (raw: the TLS session is dead) until the client hangs up,
            # so that closing with unread data cannot send a RST that overtakes the alert.
            with contextlib.suppress(OSError):
                while socket.socket.recv(tls, 4096):
                    pass
        finally:
            tls.close()

    def close(self) -> None:
        self._sock.close()
        self._thread.join(5)


@pytest.mark.parametrize("server", ["websockets", "stdlib"])
def test_client_certificate_required_and_missing(esl, daemon, pki, mtls_peer, server):
    """TLS 1.3: the client's handshake completes before the server has checked the client's
    certificate; the refusal comes after, when the client is already reading the upgrade
    response, so it is not a handshake failure (8):
    - `websockets` (asyncio) closes the TCP connection without sending its alert: the client
      reads a bare EOF, "connection closed during the WebSocket upgrade": an I/O error (1);
    - a server that sends the alert (stdlib `ssl`, as OpenSSL-based servers do) gives
      "WebSocket upgrade: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] ...": an SSL error (9)."""
    subscribe(esl)
    uuid = call_with(esl, f"STREAM_TLS_CA_FILE={pki.ca}")
    if server == "websockets":
        answer, err = start_refused(esl, daemon, uuid, mtls_peer.url())
        # (a reset instead of the FIN is possible in principle; it is the same code)
        assert err["error"] in ("connection closed during the WebSocket upgrade",
                                "WebSocket upgrade: [Errno 104] Connection reset by peer"), err
        assert mtls_peer.connections == []
        assert err["code"] == events.WS_IO == 1
    else:
        alerting = AlertingTLSServer(pki)
        try:
            answer, err = start_refused(esl, daemon, uuid, alerting.url())
        finally:
            alerting.close()
        assert err["error"].startswith(
            "WebSocket upgrade: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED]"), err
        assert alerting.errors and "PEER_DID_NOT_RETURN_A_CERTIFICATE" in alerting.errors[0]
        assert err["code"] == events.WS_SSL_ERROR == 9
    assert answer.endswith(err["error"] + "\n")
    esl.api(f"uuid_kill {uuid}")


def test_client_certificate_presented(esl, daemon, pki, mtls_peer):
    uuid = call_with(esl, f"STREAM_TLS_CA_FILE={pki.ca},STREAM_TLS_CERT_FILE={pki.client_cert},"
                     f"STREAM_TLS_KEY_FILE={pki.client_key}")
    assert daemon.execute(f"{uuid} start {mtls_peer.url()} mono 8k") == OK
    conn = mtls_peer.wait_connection()
    assert wait_until(lambda: len(conn.binary) >= 10, 5)
    assert {len(m) for m in conn.binary} == {320}
    assert mtls_peer.client_cns == ["client-1"]
    esl.api(f"uuid_kill {uuid}")


# --------------------------------------------------------------------------- 4. missing files


@pytest.mark.parametrize(("variables", "expected"), [
    ("STREAM_TLS_CA_FILE=/nonexistent/ca.pem",
     "STREAM_TLS_CA_FILE: cannot read /nonexistent/ca.pem: No such file or directory"),
    ("STREAM_TLS_CERT_FILE=/nonexistent/c.pem,STREAM_TLS_KEY_FILE={key}",
     "STREAM_TLS_CERT_FILE: cannot read /nonexistent/c.pem: No such file or directory"),
    ("STREAM_TLS_CERT_FILE={cert},STREAM_TLS_KEY_FILE=/nonexistent/c.key",
     "STREAM_TLS_KEY_FILE: cannot read /nonexistent/c.key: No such file or directory"),
    ("STREAM_TLS_KEY_FILE={key}",
     "STREAM_TLS_KEY_FILE is set but STREAM_TLS_CERT_FILE is not: give both or neither"),
    ("STREAM_TLS_CERT_FILE={cert}",
     "STREAM_TLS_CERT_FILE is set but STREAM_TLS_KEY_FILE is not: give both or neither"),
    ("STREAM_TLS_CERT_FILE={key},STREAM_TLS_KEY_FILE={key}",  # a key is no certificate
     "STREAM_TLS_CERT_FILE: no usable PEM certificate in {key}"),
    ("STREAM_TLS_CERT_FILE={cert},STREAM_TLS_KEY_FILE={cert}",  # a certificate is no key
     "STREAM_TLS_KEY_FILE: no usable PEM private key in {cert}"),
])
def test_unusable_tls_files_are_named(esl, daemon, pki, tls_peer, variables, expected):
    """-ERR naming the variable; an unusable file is also an error event with code 7
    (TLS_INIT_FAILED)."""
    subscribe(esl)
    files = {"key": pki.client_key, "cert": pki.client_cert}
    uuid = call_with(esl, f"STREAM_TLS_CA_FILE={pki.ca}," + variables.format(**files))
    answer = daemon.execute(f"{uuid} start {tls_peer.url()} mono 8k")
    assert answer.startswith("-ERR " + expected.format(**files)), answer
    assert uuid not in daemon.streams and daemon.ports.in_use == 0
    assert tls_peer.connections == []  # refused before any connection was tried
    if "give both or neither" in expected:
        # Found when the channel variables are read, like any other bad STREAM_* value: the
        # stream never existed, so there is no error event (only unusable FILES fire one).
        gevent.sleep(0.3)
        assert errors(esl, uuid) == []
    else:
        assert wait_until(lambda: errors(esl, uuid), 3)
        assert errors(esl, uuid) == [{"code": events.WS_TLS_INIT_FAILED,  # 7: libwsc's TLS init
                                      "error": answer[len("-ERR "):].rstrip("\n")}]
    esl.api(f"uuid_kill {uuid}")


# --------------------------------------------------------------------------- 5. deflate on the wire


class Relay:
    """TCP relay on 127.0.0.1 to `target`, keeping what each connection's client sent (`up`) and
    what came back (`down`)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.up: list[bytearray] = []
        self.down: list[bytearray] = []
        self._server = StreamServer(("127.0.0.1", 0), self._handle, spawn=Pool(16))

    def start(self) -> Relay:
        self._server.start()
        self.port = self._server.server_port
        return self

    def stop(self) -> None:
        self._server.stop(timeout=1)

    def _handle(self, client: gsocket.socket, _addr: Any) -> None:
        up, down = bytearray(), bytearray()
        self.up.append(up)
        self.down.append(down)
        server = gsocket.create_connection(self.target, timeout=5)
        client.settimeout(10)
        pump = gevent.spawn(self._pump, server, client, down)
        try:
            self._pump(client, server, up)
        finally:
            pump.join(timeout=2)
            pump.kill(block=True, timeout=1)
            server.close()
            client.close()

    @staticmethod
    def _pump(src: gsocket.socket, dst: gsocket.socket, seen: bytearray) -> None:
        try:
            while data := src.recv(65536):
                seen += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


@pytest.fixture
def relayed_peer() -> Any:
    p = WSPeer(compression="deflate").start()
    relay = Relay(("127.0.0.1", p.port)).start()
    try:
        yield p, relay
    finally:
        relay.stop()
        p.stop()


def big_metadata() -> str:
    """~20 kB of repeated, realistic JSON (the compressible kind of text message)."""
    items = [{"speaker": "caller", "language": "en-US", "channel": i % 4, "tags": ["a", "b"]}
             for i in range(300)]
    text = json.dumps({"call": "abc", "items": items}, separators=(",", ":"))
    assert len(text) > 20000
    return text


@pytest.mark.parametrize("deflate", [True, False])
def test_deflate_on_the_wire(esl, daemon, relayed_peer, deflate):
    """With permessage-deflate, the big text crosses compressed (RSV1, a fraction of its size)
    and audio uncompressed (the daemon's choice: L16 barely compresses); with
    STREAM_MESSAGE_DEFLATE=true nothing is offered and nothing is compressed."""
    peer, relay = relayed_peer
    meta = big_metadata()
    uuid = call_with(esl, "" if deflate else "STREAM_MESSAGE_DEFLATE=true")
    url = f"ws://127.0.0.1:{relay.port}/z"
    assert daemon.execute(f"{uuid} start {url} mono 8k {meta}") == OK
    conn = peer.wait_connection()
    assert wait_until(lambda: len(conn.binary) >= 25, 5)
    assert daemon.execute(f"{uuid} stop") == OK
    assert wait_until(conn.closed.is_set, 5)
    assert conn.texts[0] == meta  # whatever the wire carried, the server got the same text

    head, frames, left = parse_client_stream(bytes(relay.up[0]))
    assert left == 0  # the relay saw whole frames only, every one of them client-masked
    assert all(f.masked and f.fin for f in frames)
    response = bytes(relay.down[0]).split(b"\r\n\r\n", 1)[0].lower()
    text = [f for f in frames if f.opcode == 0x1]
    audio = [f for f in frames if f.opcode == 0x2]
    assert len(text) == 1 and audio and frames[-1].opcode == 0x8
    assert len(audio) == len(conn.binary)
    assert all(not f.rsv1 and f.length == 320 for f in audio)  # audio: never compressed
    audio_wire = sum(2 + 2 + 4 + f.length for f in audio)  # 16-bit length, mask key
    if deflate:
        assert b"sec-websocket-extensions: permessage-deflate" in head.lower()
        assert b"sec-websocket-extensions: permessage-deflate" in response
        meta_frame = text[0]
        assert meta_frame.rsv1  # compressed ...
        assert meta_frame.length < len(meta) / 10, meta_frame.length  # ... and far smaller
        inflated = zlib.decompressobj(-15).decompress(meta_frame.payload + b"\x00\x00\xff\xff")
        assert inflated.decode() == meta  # and it is the metadata
        # Everything the client sent: the request, audio as is, the metadata compressed.
        assert len(relay.up[0]) < len(head) + audio_wire + len(meta) / 10 + 100
    else:
        assert b"sec-websocket-extensions" not in head.lower()
        assert b"sec-websocket-extensions" not in response
        assert not text[0].rsv1 and text[0].payload == meta.encode()
        assert len(relay.up[0]) > len(meta) + audio_wire
    esl.api(f"uuid_kill {uuid}")


# --------------------------------------------------------------------------- raw misbehaving server


@dataclass
class RawConn:
    request: bytes = b""
    data: bytearray = field(default_factory=bytearray)  # what followed the request (first 1 MB)
    received: int = 0  # bytes after the request
    eof: bool = False  # the client closed its side
    upgraded: gevent.event.Event = field(default_factory=gevent.event.Event)
    closed: gevent.event.Event = field(default_factory=gevent.event.Event)


class RawWSServer:
    """A bare WebSocket server on gevent: completes the upgrade (no extensions) and then only
    reads, and only while `reading` is set: it never pongs, never closes, never sends a byte.
    `rcvbuf` shrinks SO_RCVBUF on the listening socket (accepted sockets inherit it, and it is
    in place before the TCP window is first advertised)."""

    def __init__(self, *, rcvbuf: int | None = None, reading: bool = True) -> None:
        self.reading = gevent.event.Event()
        if reading:
            self.reading.set()
        self.conns: list[RawConn] = []
        listener = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_STREAM)
        if rcvbuf:
            listener.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_RCVBUF, rcvbuf)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._server = StreamServer(listener, self._handle, spawn=Pool(16))

    def url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def start(self) -> RawWSServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(timeout=1)  # kills the handlers still running, which close their sockets

    def _handle(self, sock: gsocket.socket, _addr: Any) -> None:
        conn = RawConn()
        self.conns.append(conn)
        sock.settimeout(5)
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                data = sock.recv(4096)
                if not data:
                    return
                request += data
            head, _, rest = request.partition(b"\r\n\r\n")
            conn.request, conn.data = head, bytearray(rest)
            key = re.search(rb"(?im)^sec-websocket-key:[ \t]*(\S+)", head).group(1)
            accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
            sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            conn.upgraded.set()
            while True:
                self.reading.wait(30)
                data = sock.recv(65536)
                if not data:
                    conn.eof = True
                    return
                conn.received += len(data)
                if len(conn.data) < 1 << 20:
                    conn.data += data
        except OSError:
            pass
        finally:
            sock.close()
            conn.closed.set()


# --------------------------------------------------------------------------- 6. heartbeat


def test_unanswered_ping_drops_the_link_and_it_reconnects(esl, daemon):
    """STREAM_HEART_BEAT=0.3 on an idle (paused) link to a server that never pongs: 0.3 s idle,
    a ping, 0.3 s without a pong -> the connection is dropped as 1006 "ping timeout" (a retryable
    drop: mod_audio_stream::disconnect, no error event), and the link reconnects (connect fired
    again; the new connection also gets pinged and dropped, while the call stays paused)."""
    subscribe(esl)
    daemon.config = dataclasses.replace(daemon.config, ws_close_timeout=0.5)
    server = RawWSServer().start()
    try:
        uuid = call_with(esl, "STREAM_HEART_BEAT=0.3")
        assert daemon.execute(f"{uuid} start {server.url()} mono 8k") == OK
        assert daemon.execute(f"{uuid} pause") == OK
        stream = daemon.streams[uuid]
        assert wait_until(lambda: len(server.conns) >= 2, 5)
        first = server.conns[0]
        assert wait_until(first.closed.is_set, 2)
        assert first.eof  # the client closed the dead connection's socket, no close frame sent
        _, frames, _ = parse_client_stream(first.request + b"\r\n\r\n" + bytes(first.data))
        control = [(f.opcode, f.payload) for f in frames if f.opcode >= 0x8]
        assert control == [(0x9, b"esl-audio-stream")]  # one ping, then nothing: no close
        assert wait_until(lambda: len(stream_events(
            esl, uuid, events.CONNECT, events.DISCONNECT, events.ERROR)) >= 3, 3)
        seen = stream_events(esl, uuid, events.CONNECT, events.DISCONNECT, events.ERROR)[:3]
        assert seen == [
            (events.CONNECT, "connected"),
            (events.DISCONNECT, {"code": 1006, "reason": "ping timeout"}),
            (events.CONNECT, "connected"),
        ]
        assert stream.paused and uuid in daemon.streams
        assert stream._link.reconnects >= 1
        assert errors(esl, uuid) == []  # every reconnection so far succeeded at once
        assert daemon.execute(f"{uuid} stop") == OK
        esl.api(f"uuid_kill {uuid}")
    finally:
        server.stop()


# --------------------------------------------------------------------------- 7. backpressure

STEREO_48K = 48000 * 2 * 2  # bytes per second of 16-bit stereo at 48 kHz
CHUNK_48K = STEREO_48K // 50  # 3840 bytes per 20 ms message


def unsent(sock: Any) -> int:
    """Bytes in the kernel's send queue of a TCP socket (Linux SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


def test_slow_endpoint_is_bounded_and_does_not_hold_up_another_call(esl, daemon, peer):
    """An endpoint that stops reading (stereo 48 kHz: 192 kB/s) fills the socket buffers; the
    stream then keeps at most reconnect_buffer_seconds of audio, drops the oldest, counts it and
    reports it once the endpoint reads again. A second call to a healthy endpoint keeps its
    50 messages/s throughout.

    The client fixes its socket's SO_SNDBUF (ws/handshake.py SEND_BUFFER; Linux doubles it), so the
    kernel holds ~128 kB and the backlog is reached in about a second; left to autotuning it
    would grow to tcp_wmem's maximum (4 MB: 20 s of this stream) first."""
    subscribe(esl)
    # (a short close timeout: the raw server never answers the close frame at the stop)
    daemon.config = dataclasses.replace(daemon.config, reconnect_buffer_seconds=0.5,
                                        ws_close_timeout=0.5)
    bound = int(0.5 * 48000) * 2 * 2  # 0.5 s of 16-bit stereo at 48 kHz = 96000 bytes
    slow = RawWSServer(rcvbuf=4096, reading=False).start()
    try:
        healthy = call_with(esl)
        stalled = call_with(esl)
        assert daemon.execute(f"{healthy} start {peer.url()} stereo 48000") == OK
        good = peer.wait_connection()
        assert daemon.execute(f"{stalled} start {slow.url()} stereo 48000") == OK
        link = daemon.streams[stalled]._link
        ws = link.ws
        assert ws._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * SEND_BUFFER
        stall_from = monotonic()
        peak = {"backlog": 0, "buffered": 0, "items": 0, "kernel": 0}

        def sample() -> bool:
            peak["backlog"] = max(peak["backlog"], link._backlog.audio_bytes)
            peak["buffered"] = max(peak["buffered"], ws.buffered)
            peak["items"] = max(peak["items"], len(link._backlog))
            peak["kernel"] = max(peak["kernel"], unsent(ws._sock))
            return link.dropped_total >= 50  # 1 s of audio dropped: well past the bound

        assert wait_until(sample, 8), (link.dropped_total, peak)
        wait_until(lambda: sample() and False, 0.5)  # and on for a while, dropping
        stall_to = monotonic()
        # Memory for the stalled stream stays bounded: the backlog never exceeds its bound, the
        # connection's own buffer holds at most the rest of one partly sent message, and the
        # kernel what its send buffer allows.
        assert peak["backlog"] <= bound, peak
        assert peak["items"] <= bound // CHUNK_48K + 1, peak
        assert peak["buffered"] <= CHUNK_48K + 14, peak
        assert peak["kernel"] <= 2 * SEND_BUFFER, peak
        assert link.send == link._to_backlog and ws.congested and ws.is_open
        # drops are reported while the stall lasts (about once a second), not only afterwards
        assert wait_until(lambda: any(e.get("dropped") for e in errors(esl, stalled)), 2)

        # The healthy call never noticed: ~50 messages/s, no gap, all through the stall.
        during = [t for t in good.times if stall_from <= t <= stall_to]
        span = stall_to - stall_from
        assert len(during) >= 0.8 * 50 * span, (len(during), span)
        gaps = [b - a for a, b in zip([stall_from, *during], [*during, stall_to], strict=True)]
        assert max(gaps) < 0.25, max(gaps)
        assert {len(m) for m in good.binary} == {CHUNK_48K}

        slow.reading.set()  # the endpoint reads again: the backlog drains, drops are reported
        assert wait_until(lambda: link.send == link._send_live, 5)
        assert wait_until(lambda: sum(m.get("dropped", 0) for m in errors(esl, stalled))
                          == link.dropped_total, 3)  # every drop reported, none twice
        reports = errors(esl, stalled)
        assert all(m["code"] == events.WS_IO and "dropped" in m["error"] for m in reports)
        assert link.dropped_total >= 50
        got = slow.conns[0].received
        assert wait_until(lambda: slow.conns[0].received > got + 10 * CHUNK_48K, 3)  # live again
        assert link.ws is ws and ws.is_open  # the same connection all along
    finally:
        slow.reading.set()  # let the stops' close frames through
        for uuid in list(daemon.streams):
            daemon.execute(f"{uuid} stop")
        slow.stop()


def test_kernel_send_buffer_is_bounded_for_a_stalled_endpoint(esl, daemon):
    """What a stalled stream holds in the kernel should be small next to its backlog: here,
    after 2.5 s of a 192 kB/s stream with nothing read, at most 256 kB may sit in the socket's
    send queue (the backlog, 0.5 s, takes the rest and drops the oldest)."""
    # (a short close timeout: the raw server never answers the close frame at the stop)
    daemon.config = dataclasses.replace(daemon.config, reconnect_buffer_seconds=0.5,
                                        ws_close_timeout=0.5)
    slow = RawWSServer(rcvbuf=4096, reading=False).start()
    try:
        uuid = call_with(esl)
        assert daemon.execute(f"{uuid} start {slow.url()} stereo 48000") == OK
        link = daemon.streams[uuid]._link
        ws = link.ws
        peak = [0]

        def sample() -> bool:
            peak[0] = max(peak[0], unsent(ws._sock))
            return False

        wait_until(sample, 2.5)
        assert ws.is_open
        assert peak[0] <= 256 * 1024, (
            f"{peak[0]} bytes ({peak[0] / STEREO_48K:.1f} s of audio) queued in the kernel, "
            f"SO_SNDBUF {ws._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)}, "
            f"{link.dropped_total} dropped, backlog {link._backlog.audio_bytes} B")
        assert link.dropped_total > 0  # the bounded backlog, not the kernel, decided what went
    finally:
        slow.reading.set()  # let the stops' close frames through
        for uuid in list(daemon.streams):
            daemon.execute(f"{uuid} stop")
        slow.stop()
