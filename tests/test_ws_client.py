"""WebSocketConnection against real servers on 127.0.0.1: a `websockets` asyncio server in a thread,
a `websockets` server in a subprocess (to kill it), and raw sockets for misbehaving peers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import gevent
import pytest
from websockets.asyncio.server import serve
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from esl_audio_stream.call.link import Link
from esl_audio_stream.ws import outgoing
from esl_audio_stream.ws.connection import WebSocketConnection
from esl_audio_stream.ws.errors import WSError, WSErrorCode
from esl_audio_stream.ws.url import parse_ws_url


def wait_until(pred: Callable[[], Any], timeout: float = 5.0) -> None:
    """Poll without blocking the gevent hub (the client's greenlets must keep running)."""
    with gevent.Timeout(timeout, AssertionError(f"condition not met within {timeout} s")):
        while not pred():
            gevent.sleep(0.005)


class FrameLog(logging.Handler):
    """Collects the frames websockets logs at DEBUG ("< PING ..."), to see what the client sent."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class Server:
    """A real websockets asyncio server running in its own thread and event loop."""

    def __init__(self, **serve_kwargs: Any) -> None:
        self.received: list[tuple[str, Any]] = []  # ("text"|"binary", data) in arrival order
        self.events: list[Any] = []
        self.requests: list[Any] = []
        self.closes: list[tuple[int | None, str | None]] = []
        self.frames = FrameLog()
        logger = logging.getLogger(f"test.ws.{id(self)}")
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(self.frames)
        serve_kwargs.setdefault("logger", logger)
        self._kwargs = serve_kwargs
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future[None] | None = None
        self.port = 0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("server did not start")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/path/x?a=1&b=2"

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        async with serve(self._handler, "127.0.0.1", 0, **self._kwargs) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop

    async def _handler(self, ws: Any) -> None:
        self.requests.append(ws.request)
        try:
            async for msg in ws:
                if isinstance(msg, bytes):
                    self.received.append(("binary", msg))
                    continue
                self.received.append(("text", msg))
                if msg.startswith("close:"):
                    _, code, reason = msg.split(":", 2)
                    await ws.close(int(code), reason)
                elif msg == "ping-me":
                    waiter = await ws.ping(b"srv")
                    await asyncio.wait_for(waiter, 2)
                    self.events.append("pong received")
                elif msg.startswith("stall:"):  # stop reading: websockets' queue and TCP fill up
                    await asyncio.sleep(float(msg[6:]))
                elif msg.startswith("echo:"):
                    await ws.send(msg[5:])
                elif msg.startswith("blob:"):
                    await ws.send(os.urandom(0) + bytes(range(256)) * int(msg[5:]))
        finally:
            self.closes.append((ws.close_code, ws.close_reason))

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set_result, None)
        wait_until(lambda: not self._thread.is_alive(), 15)


@pytest.fixture
def server() -> Any:
    srv = Server()
    yield srv
    srv.stop()


class Recorder:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.binaries: list[bytes] = []
        self.closes: list[tuple[int, str]] = []

    def client(self, url: str, **kwargs: Any) -> WebSocketConnection:
        return WebSocketConnection(
            url,
            on_text=self.texts.append,
            on_binary=self.binaries.append,
            on_close=lambda code, reason: self.closes.append((code, reason)),
            **kwargs,
        )


def assert_ended(client: WebSocketConnection) -> None:
    gevent.sleep(0)  # let killed greenlets unwind
    for glet in (client._reader, client._pinger):  # (its only greenlets)
        assert glet is None or glet.dead
    assert client._sock is None or client._sock.closed


# --------------------------------------------------------------------------- URL parsing


def test_parse_ws_url() -> None:
    assert parse_ws_url("ws://example.com") == (False, "example.com", 80, "/", "example.com")
    assert parse_ws_url("wss://h:8443/a/b?x=1") == (True, "h", 8443, "/a/b?x=1", "h:8443")
    assert parse_ws_url("ws://[::1]:9000/s") == (False, "::1", 9000, "/s", "[::1]:9000")
    assert parse_ws_url("wss://[::1]/") == (True, "::1", 443, "/", "[::1]")
    assert parse_ws_url("WS://Host:80/") == (False, "host", 80, "/", "host")
    for bad in ("http://h/", "ws://", "ws://h:99999/", "ws://u:p@h/", "h:80"):
        with pytest.raises(ValueError):
            parse_ws_url(bad)


# --------------------------------------------------------------------------- happy paths


def test_binary_and_text_exact_bytes_and_order(server: Server) -> None:
    rec = Recorder()
    client = rec.client(server.url, headers=[("X-Call", "abc-123")], deflate=False)
    client.connect()
    assert client.is_open
    sent: list[tuple[str, Any]] = []
    for i in range(200):
        payload = os.urandom(640) if i % 3 else bytes([i % 256]) * 3
        assert client.send_binary(payload)
        sent.append(("binary", payload))
        if i % 10 == 0:
            text = f'{{"seq": {i}, "txt": "é€"}}'
            assert client.send_text(text)
            sent.append(("text", text))
    wait_until(lambda: len(server.received) == len(sent))
    assert server.received == sent
    request = server.requests[0]
    assert request.path == "/path/x?a=1&b=2"
    assert request.headers["X-Call"] == "abc-123"
    assert request.headers["Host"] == f"127.0.0.1:{server.port}"
    assert "Sec-WebSocket-Extensions" not in request.headers
    assert not client.deflate_negotiated
    client.close()
    assert rec.closes == [(1000, "")]
    assert_ended(client)


def test_order_kept_through_the_backlog_when_the_kernel_buffer_fills(server: Server) -> None:
    """What the kernel does not take waits in the one queue before the connection (a Link's
    backlog), in order with the texts."""
    client = Link(server.url, uuid="t", fire=lambda sub, body: None, on_text=print,
                  on_binary=print, on_gone=lambda code, reason: None, metadata=None,
                  reconnect=False, backlog_bytes=64 << 20, deflate=False)
    client.connect()
    conn = client.ws
    assert client.send_text("stall:0.5")
    sent: list[tuple[str, Any]] = [("text", "stall:0.5")]
    went_through_writer = False
    for i in range(300):  # ~20 MB without yielding: the kernel cannot take it all at once
        payload = i.to_bytes(4, "big") + os.urandom(65536)
        assert client.send(payload)
        sent.append(("binary", payload))
        assert client.send_text(f"after {i}")
        sent.append(("text", f"after {i}"))
        went_through_writer = went_through_writer or client._backlog.buffered > 0
    assert went_through_writer
    wait_until(lambda: len(server.received) == len(sent), 20)
    assert server.received == sent
    assert client.dropped_total == 0
    client.close()
    assert_ended(conn)


def test_receives_text_and_binary(server: Server) -> None:
    rec = Recorder()
    client = rec.client(server.url)
    client.connect()
    client.send_text("echo:hello ☎")
    client.send_text("blob:300")  # 76,800 bytes: several TCP segments, maybe fragmented
    wait_until(lambda: rec.texts and rec.binaries)
    assert rec.texts == ["hello ☎"]
    assert rec.binaries == [bytes(range(256)) * 300]
    client.close()


def test_deflate_negotiated_by_default(server: Server) -> None:
    rec = Recorder()
    client = rec.client(server.url)
    client.connect()
    assert client.deflate_negotiated
    wait_until(lambda: server.requests)
    assert "permessage-deflate" in server.requests[0].headers["Sec-WebSocket-Extensions"]
    audio = bytes(640) * 5  # compressible: proves both ends agree on the compressed frames
    for _ in range(20):
        assert client.send_binary(audio)
    client.send_text("echo:" + "x" * 5000)
    wait_until(lambda: rec.texts)
    assert rec.texts == ["x" * 5000]
    assert server.received[:20] == [("binary", audio)] * 20
    client.close()


def test_audio_is_sent_uncompressed_unless_asked(server: Server) -> None:
    """Text is deflated; binary audio only with compress_binary (RSV1 set per message)."""
    audio = bytes(640)
    plain = Recorder().client(server.url)
    plain.connect()
    packed = Recorder().client(server.url, compress_binary=True)
    packed.connect()
    assert plain.deflate_negotiated and packed.deflate_negotiated
    for client in (plain, packed):
        for _ in range(10):
            assert client.send_binary(audio)
    wait_until(lambda: len(server.received) >= 20)
    assert server.received == [("binary", audio)] * 20
    # what goes on the wire (framing advances the compressor: nothing is sent after this)
    wire_plain = plain._frames.frame(0x82, audio, plain._compress_binary)
    wire_packed = packed._frames.frame(0x82, audio, packed._compress_binary)
    assert wire_plain[0] == 0x82 and len(wire_plain) == 2 + 2 + 4 + 640  # no RSV1, full size
    assert wire_packed[0] == 0x82 | 0x40 and len(wire_packed) < 100  # RSV1, compressed
    plain.close()
    packed.close()


def test_deflate_not_negotiated_when_server_declines() -> None:
    srv = Server(compression=None)
    try:
        rec = Recorder()
        client = rec.client(srv.url, deflate=True)
        client.connect()
        wait_until(lambda: srv.requests)
        assert "permessage-deflate" in srv.requests[0].headers["Sec-WebSocket-Extensions"]
        assert not client.deflate_negotiated
        client.send_binary(b"\x01\x02")
        wait_until(lambda: srv.received)
        assert srv.received == [("binary", b"\x01\x02")]
        client.close()
    finally:
        srv.stop()


# --------------------------------------------------------------------------- closing


def test_server_close_reaches_on_close_with_code_and_reason(server: Server) -> None:
    rec = Recorder()
    client = rec.client(server.url)
    client.connect()
    client.send_text("close:4000:bye now")
    wait_until(lambda: rec.closes)
    assert rec.closes == [(4000, "bye now")]
    assert not client.is_open
    assert not client.send_binary(b"late")
    wait_until(lambda: server.closes)
    assert server.closes == [(4000, "bye now")]  # our reply completed the handshake
    assert client.last_error is None
    assert_ended(client)
    client.close()  # harmless afterwards
    assert rec.closes == [(4000, "bye now")]


def test_client_close_handshake(server: Server) -> None:
    rec = Recorder()
    client = rec.client(server.url)
    client.connect()
    client.send_text("one")
    client.close(4001, "stream stopped")
    assert rec.closes == [(4001, "stream stopped")]
    wait_until(lambda: server.closes)
    assert server.closes == [(4001, "stream stopped")]
    assert server.received == [("text", "one")]
    assert_ended(client)


def test_close_from_inside_a_callback(server: Server) -> None:
    closes: list[tuple[int, str]] = []
    holder: list[WebSocketConnection] = []
    client = WebSocketConnection(
        server.url,
        on_text=lambda text: holder[0].close(1000, text),
        on_binary=lambda data: None,
        on_close=lambda code, reason: closes.append((code, reason)),
    )
    holder.append(client)
    client.connect()
    client.send_text("echo:from callback")
    wait_until(lambda: closes)
    assert closes == [(1000, "from callback")]
    assert_ended(client)


def test_abort_calls_on_close_once(server: Server) -> None:
    rec = Recorder()
    client = rec.client(server.url)
    client.connect()
    client.abort()
    client.abort()
    client.close()
    assert rec.closes == [(1006, "aborted")]
    assert_ended(client)
    wait_until(lambda: server.closes)
    assert server.closes[0][0] == 1006  # no close frame was sent


SUBPROCESS_SERVER = """
import asyncio, sys
from websockets.asyncio.server import serve
async def handler(ws):
    async for msg in ws:
        pass
async def main():
    async with serve(handler, "127.0.0.1", 0) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()
asyncio.run(main())
"""


def test_server_killed_gives_1006() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SUBPROCESS_SERVER], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(proc.stdout.readline())
        rec = Recorder()
        client = rec.client(f"ws://127.0.0.1:{port}/")
        client.connect()
        assert client.send_binary(b"\x00" * 320)
        proc.kill()
        proc.wait(5)
        wait_until(lambda: rec.closes)
        assert rec.closes[0][0] == 1006
        assert len(rec.closes) == 1
        assert client.last_error is not None and client.last_error.code == WSErrorCode.IO
        assert not client.send_binary(b"\x00" * 320)
        assert_ended(client)
    finally:
        proc.kill()
        proc.wait(5)
        proc.stdout.close()


# --------------------------------------------------------------------------- ping / heartbeat


def test_server_pings_are_answered(server: Server) -> None:
    rec = Recorder()
    client = rec.client(server.url)
    client.connect()
    client.send_text("ping-me")
    wait_until(lambda: server.events)
    assert server.events == ["pong received"]
    client.close()


def test_heartbeat_ping_sent_when_idle(server: Server) -> None:
    rec = Recorder()
    client = rec.client(server.url, heartbeat=0.15)
    client.connect()
    wait_until(lambda: client.pings_sent >= 2)
    wait_until(lambda: sum("PING" in line for line in server.frames.lines) >= 2)
    gevent.sleep(0.2)  # beyond the pong bound: the server's pongs kept it alive
    assert client.is_open and rec.closes == []
    client.close()
    assert_ended(client)


def test_no_heartbeat_ping_while_audio_flows(server: Server) -> None:
    client = Recorder().client(server.url, heartbeat=0.2)
    client.connect()
    for _ in range(30):  # 0.3 s of 10 ms sends
        client.send_binary(b"\x00" * 160)
        gevent.sleep(0.01)
    assert client.pings_sent == 0
    client.close()


class RawServer:
    """Accepts one connection, completes the upgrade with wsproto, then does whatever `after`
    does with the socket (e.g. nothing: never reads, never answers pings)."""

    def __init__(self, after: Callable[[socket.socket], None] | None = None,
                 upgrade: bool = True) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.after = after
        self.upgrade = upgrade
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.listener.settimeout(5)
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.conns.append(conn)
        if self.upgrade:
            ws = WSConnection(ConnectionType.SERVER)
            conn.settimeout(5)
            while True:
                ws.receive_data(conn.recv(65536))
                events = list(ws.events())
                if any(isinstance(e, Request) for e in events):
                    conn.sendall(ws.send(AcceptConnection()))
                    break
        if self.after:
            self.after(conn)
        self.stop.wait(10)

    def close(self) -> None:
        self.stop.set()
        for conn in self.conns:
            conn.close()
        self.listener.close()
        wait_until(lambda: not self.thread.is_alive(), 15)


def test_missing_pong_is_a_ping_timeout() -> None:
    raw = RawServer()  # upgrades, then ignores everything
    try:
        rec = Recorder()
        client = rec.client(f"ws://127.0.0.1:{raw.port}/", heartbeat=0.1)
        client.connect()
        wait_until(lambda: rec.closes)
        assert rec.closes == [(1006, "ping timeout")]
        assert client.last_error is not None
        assert client.last_error.code == WSErrorCode.PING_TIMEOUT == 5
        assert_ended(client)
    finally:
        raw.close()


def test_overflow_drops_the_oldest_whole_messages_never_texts() -> None:
    """A peer that never reads: the kernel fills, the rest of one frame waits in the connection,
    everything else in the link's backlog, whose bound drops the OLDEST audio messages, whole
    and counted. Texts are never dropped; dropping is not a disconnect. (The connection itself
    holds no queue of messages: it refuses them while congested.)"""
    raw = RawServer()  # never reads: the kernel buffers fill, then the backlog
    try:
        closes: list[tuple[int, str]] = []
        link = Link(f"ws://127.0.0.1:{raw.port}/", uuid="t", fire=lambda sub, body: None,
                    on_text=print, on_binary=print,
                    on_gone=lambda code, reason: closes.append((code, reason)), metadata=None,
                    reconnect=False, backlog_bytes=1 << 20, deflate=False)
        link.connect()
        conn = link.ws
        size = 256 * 1024
        n = 0
        while link.dropped_total == 0 and n < 2000:
            assert link.send(n.to_bytes(4, "big") + bytes(size - 4))
            n += 1
            gevent.sleep(0)  # let the link's worker push what the kernel takes
        assert link.dropped_total == 1
        assert not conn.send_binary(b"x") and conn.congested  # the connection queues nothing
        assert conn.buffered <= size + 14
        assert link.send_text("T")
        for _ in range(8):
            assert link.send(n.to_bytes(4, "big") + bytes(size - 4))
            n += 1
        held = list(link._backlog)
        assert link._backlog.audio_bytes == 1 << 20  # the bound: 4 messages
        assert link.dropped_total == 1 + 8  # each message beyond it dropped one, whole
        assert held[0] == "T"  # older than all the audio held now, and kept
        seqs = [int.from_bytes(m[:4], "big") for m in held[1:]]
        assert seqs == list(range(n - 4, n))  # the newest, whole, in order
        assert link.is_open and conn.is_open  # dropping is not a disconnect
        link.abort()
        assert not conn.is_open and closes == []  # an abort is not the endpoint going
        assert_ended(conn)
    finally:
        raw.close()


def test_masked_server_frame_is_error_3() -> None:
    def send_masked(conn: socket.socket) -> None:
        conn.sendall(b"\x81\x82\x00\x00\x00\x00hi")  # masked text frame: forbidden from servers

    raw = RawServer(after=send_masked)
    try:
        rec = Recorder()
        client = rec.client(f"ws://127.0.0.1:{raw.port}/")
        client.connect()
        wait_until(lambda: rec.closes)
        assert rec.closes[0][0] == 1002
        assert client.last_error is not None
        assert client.last_error.code == WSErrorCode.SERVER_MASKED
        assert rec.texts == []
    finally:
        raw.close()


# --------------------------------------------------------------------------- connect failures


def test_connect_refused_is_error_6() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    rec = Recorder()
    client = rec.client(f"ws://127.0.0.1:{port}/")
    with pytest.raises(WSError) as info:
        client.connect()
    assert info.value.code == WSErrorCode.CONNECT_FAILED == 6
    assert info.value.http_status is None
    assert client.last_error is info.value
    assert rec.closes == []  # never opened: the exception is the report
    assert not client.send_binary(b"x")


def test_http_403_on_upgrade() -> None:
    srv = Server(process_request=lambda conn, req: conn.respond(HTTPStatus.FORBIDDEN, "no\n"))
    try:
        client = Recorder().client(srv.url)
        with pytest.raises(WSError) as info:
            client.connect()
        assert info.value.http_status == 403
        assert info.value.code == WSErrorCode.INVALID_HEADER
        assert client.http_status == 403
    finally:
        srv.stop()


def test_silent_server_times_out_during_upgrade() -> None:
    raw = RawServer(upgrade=False)  # accepts TCP, never answers the upgrade
    try:
        client = Recorder().client(f"ws://127.0.0.1:{raw.port}/", connect_timeout=0.3)
        with pytest.raises(WSError) as info:
            client.connect()
        assert info.value.code == WSErrorCode.TIMEOUT
        assert "upgrade" in info.value.message
        assert client._sock is not None and client._sock.closed
    finally:
        raw.close()


def test_not_a_websocket_server_is_error_2() -> None:
    raw = RawServer(upgrade=False, after=lambda c: c.sendall(b"HTTP/1.1 200 OK\r\n\r\nhello"))
    try:
        client = Recorder().client(f"ws://127.0.0.1:{raw.port}/")
        with pytest.raises(WSError) as info:
            client.connect()
        assert info.value.code == WSErrorCode.INVALID_HEADER
        assert info.value.http_status == 200
    finally:
        raw.close()


# --------------------------------------------------------------------------- wss smoke test


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True, timeout=20,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"openssl CLI not usable: {exc}")
    return cert, key


def test_wss_smoke(self_signed: tuple[str, str]) -> None:
    cert, key = self_signed
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    srv = Server(ssl=server_ctx)
    try:
        url = f"wss://127.0.0.1:{srv.port}/secure"
        rec = Recorder()
        client = rec.client(url, ssl_context=ssl.create_default_context(cafile=cert))
        client.connect()
        payload = os.urandom(100_000)
        assert client.send_binary(payload)
        client.send_text("echo:over tls")
        wait_until(lambda: rec.texts)
        assert rec.texts == ["over tls"]
        assert srv.received[0] == ("binary", payload)
        client.close()
        assert rec.closes == [(1000, "")]

        untrusted = Recorder().client(url)  # system CAs do not know our self-signed cert
        with pytest.raises(WSError) as info:
            untrusted.connect()
        assert info.value.code == WSErrorCode.SSL_ERROR == 9
    finally:
        srv.stop()


def test_errors_carry_code_message_status() -> None:
    err = WSError(WSErrorCode.INVALID_HEADER, "refused", http_status=401)
    assert (err.code, err.message, err.http_status) == (2, "refused", 401)
    assert "refused" in str(err)
    with contextlib.suppress(ValueError):
        WebSocketConnection("http://nope", on_text=print, on_binary=print, on_close=print)
        pytest.fail("http:// accepted")


def test_close_is_bounded_when_the_server_never_answers() -> None:
    raw = RawServer()  # upgrades, then never reads nor answers our close frame
    try:
        rec = Recorder()
        client = rec.client(f"ws://127.0.0.1:{raw.port}/", close_timeout=0.2)
        client.connect()
        with gevent.Timeout(2, AssertionError("close() was not bounded by close_timeout")):
            client.close(1001, "going")
        assert rec.closes == [(1001, "going")]
        assert_ended(client)
    finally:
        raw.close()


def test_close_from_a_callback_is_bounded_too() -> None:
    def greet(conn: socket.socket) -> None:
        conn.sendall(b"\x81\x02hi")  # one unmasked text frame, then silence

    raw = RawServer(after=greet)
    try:
        closes: list[tuple[int, str]] = []
        holder: list[WebSocketConnection] = []
        client = WebSocketConnection(
            f"ws://127.0.0.1:{raw.port}/",
            on_text=lambda text: holder[0].close(4002, text),
            on_binary=lambda data: None,
            on_close=lambda code, reason: closes.append((code, reason)),
            close_timeout=0.2,
        )
        holder.append(client)
        client.connect()
        wait_until(lambda: closes, 3)
        assert closes == [(4002, "hi")]
        assert_ended(client)
    finally:
        raw.close()


def test_stalled_peer_ends_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outgoing, "WRITE_STALL_TIMEOUT", 0.3)
    raw = RawServer()  # never reads
    try:
        rec = Recorder()
        client = rec.client(f"ws://127.0.0.1:{raw.port}/", deflate=False)
        client.connect()
        chunk = os.urandom(256 * 1024)
        while client.buffered == 0:  # until the kernel refuses and the rest of a frame waits
            assert client.send_binary(chunk)

        def owner() -> None:  # as a Link does: wait for the socket to drain, bounded
            while client.is_open:
                client.wait_writable(1.0)
                client.flush()

        gevent.spawn(owner)
        wait_until(lambda: rec.closes, 5)
        assert rec.closes[0][0] == 1006
        assert client.last_error is not None and client.last_error.code == WSErrorCode.TIMEOUT
        assert_ended(client)
    finally:
        raw.close()


def test_killing_a_connecting_greenlet_leaks_no_socket() -> None:
    raw = RawServer(upgrade=False)  # never answers the upgrade
    try:
        client = Recorder().client(f"ws://127.0.0.1:{raw.port}/", connect_timeout=5)
        glet = gevent.spawn(client.connect)
        wait_until(lambda: client._sock is not None)
        glet.kill(block=True, timeout=2)
        assert glet.dead
        assert client._sock.closed
        assert not client.is_open and not client.send_text("x")
    finally:
        raw.close()


def test_deflate_parameters_chosen_by_the_server_are_honoured() -> None:
    from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

    factory = ServerPerMessageDeflateFactory(
        client_no_context_takeover=True, client_max_window_bits=10
    )
    srv = Server(compression=None, extensions=[factory])
    try:
        rec = Recorder()
        client = rec.client(srv.url)
        client.connect()
        assert client.deflate_negotiated
        assert client._frames.compress_reset and client._frames.compress_bits == 10
        messages = [bytes(640), os.urandom(640), b"a" * 5000, b""]
        for m in messages:
            assert client.send_binary(m)
        assert client.send_text("déjà")
        wait_until(lambda: len(srv.received) == 5)
        assert srv.received == [("binary", m) for m in messages] + [("text", "déjà")]
        client.close()
    finally:
        srv.stop()
