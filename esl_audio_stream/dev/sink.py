"""A WebSocket endpoint that keeps what it hears: the demo's listener and the bench's sink.

wsproto in the server role on a gevent StreamServer: no dependency beyond the daemon's own, and
the same sans-IO library the client uses (a different peer — the `websockets` library — checks the
client in the tests). Each connection becomes a `SinkSession` holding its text messages, its
audio and (optionally) each binary message's arrival time, and can be written out as a WAV.
"""

from __future__ import annotations

import logging
import time
import wave
from array import array
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import gevent.event
from gevent.server import StreamServer
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from ..ws.framing import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameParser, server_frame

log = logging.getLogger(__name__)

#: How a Twilio Media Streams media message begins (protocols/twilio.py's template): the fast
#: loop times it as it times a binary audio message.
_TWILIO_MEDIA = b'{"event":"media"'


class SinkSession:
    """One WebSocket connection's worth of what the endpoint heard."""

    def __init__(self, path: str, record_times: bool) -> None:
        self.path = path
        query = parse_qs(urlsplit(path).query)
        self.rate = int(query.get("rate", ["16000"])[0])
        self.texts: list[str] = []
        self.audio = bytearray()
        self.messages = 0
        self.sizes: set[int] = set()
        self.first_text_before_audio: bool | None = None
        self.times: array | None = array("d") if record_times else None
        self.close_code: int | None = None
        self.close_reason = ""
        self.deflate = False
        self.closed = gevent.event.Event()

    @property
    def seconds(self) -> float:
        return len(self.audio) / 2 / self.rate

    def write_wav(self, path: str | Path) -> Path:
        path = Path(path)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self.rate)
            w.writeframes(bytes(self.audio))
        return path


class AudioSink:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, keep_audio: bool = True,
                 record_times: bool = False, idle_timeout: float = 60.0,
                 fast: bool = False, fast_deflate: bool = False, lazy: float = 0.0) -> None:
        #: fast: no deflate, and frames read by a minimal parser instead of wsproto (~10x
        #: cheaper), so the bench's sink stays far from being its bottleneck.
        self.fast = fast
        #: ... but permessage-deflate accepted (the bench's deflate on: the daemon compresses
        #: its texts; binary audio is never compressed, so the parser still reads it).
        self.fast_deflate = fast_deflate
        #: > 0 (fast only): each connection is read once every `lazy` seconds, a few messages
        #: a read instead of one, for a sink that costs a third (500 calls: 26-31% of a core
        #: against 72-89%; its times then say when it read, not when a message came: the
        #: bench reads the daemon's own latency instead).
        self.lazy = lazy
        self.keep_audio = keep_audio
        self.record_times = record_times
        self.idle_timeout = idle_timeout
        self.sessions: list[SinkSession] = []
        self.new_session = gevent.event.Event()
        self._server = StreamServer((host, port), self._handle)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address[:2]

    def url(self, path: str = "/") -> str:
        host, port = self.address
        return f"ws://{host}:{port}{path}"

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(timeout=2)

    def _handle(self, sock, _addr) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        session: SinkSession | None = None
        parts: list[bytes] = []
        texts: list[str] = []
        keep = self.keep_audio
        sock.settimeout(self.idle_timeout)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, BytesMessage):
                        assert session is not None
                        if not event.message_finished:
                            parts.append(event.data)
                            continue
                        payload = b"".join((*parts, event.data)) if parts else event.data
                        parts.clear()
                        if session.times is not None:
                            session.times.append(time.monotonic())
                        session.messages += 1
                        session.sizes.add(len(payload))
                        if session.first_text_before_audio is None:
                            session.first_text_before_audio = bool(session.texts)
                        if keep:
                            session.audio += payload
                    elif isinstance(event, TextMessage):
                        texts.append(event.data)
                        if event.message_finished:
                            assert session is not None
                            session.texts.append("".join(texts))
                            texts.clear()
                    elif isinstance(event, Request):
                        session = SinkSession(event.target, self.record_times)
                        if self.fast:
                            extensions = [PerMessageDeflate()] if self.fast_deflate else []
                            sock.sendall(ws.send(AcceptConnection(extensions=extensions)))
                            session.deflate = bool(extensions) and any(
                                "permessage-deflate" in str(e) for e in event.extensions)
                            self.sessions.append(session)
                            self.new_session.set()
                            self._fast_loop(sock, session)
                            return
                        accept = AcceptConnection(extensions=[PerMessageDeflate()])
                        sock.sendall(ws.send(accept))
                        session.deflate = any(
                            "permessage-deflate" in str(e) for e in event.extensions
                        )
                        self.sessions.append(session)
                        self.new_session.set()
                    elif isinstance(event, Ping):
                        sock.sendall(ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        if session is not None:
                            session.close_code = event.code
                            session.close_reason = event.reason or ""
                        sock.sendall(ws.send(event.response()))
                        return
        except (OSError, TimeoutError) as exc:
            log.debug("sink connection ended: %s", exc)
        except Exception:
            log.exception("sink connection failed")
        finally:
            if session is not None:
                session.closed.set()
            sock.close()

    def _fast_loop(self, sock, session: SinkSession) -> None:
        """Read client frames with ws/framing.py's parser (no extensions; clients never
        fragment). Each message is timed when the bytes that completed it came off the socket."""
        parser = FrameParser()
        times = session.times
        keep = self.keep_audio
        lazy = self.lazy
        while True:
            if lazy:
                gevent.sleep(lazy)
            data = sock.recv(262144)
            if not data:
                return
            now = time.monotonic()
            for opcode, _fin, _rsv1, payload in parser.feed(data):
                if opcode == OP_BINARY:
                    session.messages += 1
                    session.sizes.add(len(payload))
                    if times is not None:
                        times.append(now)
                    if session.first_text_before_audio is None:
                        session.first_text_before_audio = bool(session.texts)
                    if keep:
                        session.audio += payload
                elif opcode == OP_TEXT:
                    if payload[:16] == _TWILIO_MEDIA:  # Twilio's audio: timed, not kept
                        session.messages += 1
                        session.sizes.add(len(payload))
                        if times is not None:
                            times.append(now)
                        continue
                    session.texts.append(payload.decode("utf-8", "replace"))
                elif opcode == OP_PING:
                    sock.sendall(server_frame(OP_PONG, bytes(payload)))
                elif opcode == OP_CLOSE:
                    if len(payload) >= 2:
                        session.close_code = int.from_bytes(payload[:2], "big")
                        session.close_reason = payload[2:].decode("utf-8", "replace")
                    else:
                        session.close_code = 1005
                    sock.sendall(server_frame(OP_CLOSE, bytes(payload[:2])))
                    return
