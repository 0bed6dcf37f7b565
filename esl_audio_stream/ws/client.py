"""WebSocket client: wsproto (sans-IO) over gevent sockets, `ssl` for wss.

Why this shape:
- Sending is on the per-frame path (50 messages/s per call), so `send_binary` normally does no
  greenlet switch: it builds the frame and tries one non-blocking `send`. Only when the kernel
  buffer is full does the rest go to a bounded outgoing buffer that a writer greenlet (started on
  demand, owned here) drains; while anything is buffered every later message, text, binary, pong
  or close, queues behind it, so the server sees them in the order they were sent.
- Outgoing data frames are built here, not by wsproto: wsproto's generic framer costs ~21 us per
  640-byte frame (masking byte-class tables, event objects); this one builds the frame in one
  reused buffer and masks it in place in C (ws/_mask_build.py), with no allocation per frame.
  Messages are never fragmented, so wsproto's state stays valid; it still parses everything
  received and builds the control frames (ping, pong, close). Compression uses zlib level 1:
  for real-time audio, speed matters more than the last bytes of ratio.
- Overflow drops whole messages (counted in `dropped`), never parts of one: audio that cannot be
  sent in time is worth less than a connection that stays in sync.
- permessage-deflate is offered with wsproto's defaults, keeping the compression context across
  messages (unless the server demands client_no_context_takeover). Text messages are compressed;
  binary audio is not, unless `compress_binary` (RFC 7692 lets the sender choose per message):
  L16 gains ~10% at ~5 us per frame. Our own compression window is 1 kB (any smaller window
  inflates at the peer), so zlib holds ~12 kB per connection, not ~256 kB.
- Error codes follow libwsc's numbering, which mod_audio_stream reports in its error events.
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import logging
import os
import ssl
import struct
import zlib
from collections.abc import Callable, Sequence
from time import monotonic
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.event
import gevent.ssl
from gevent import socket as gsocket
from gevent.socket import wait_read, wait_write
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ._mask import ffi as _mask_ffi
from ._mask import lib as _mask_lib

log = logging.getLogger(__name__)

_RECV_SIZE = 65536
_READ_POLL = 5.0  # idle wake-up of the reader; liveness itself is the heartbeat's job
WRITE_STALL_TIMEOUT = 30.0  # no byte accepted by the kernel for this long: the peer is gone
#: Kernel send buffer per connection (Linux doubles it): ~2 s of 16 kHz mono.
SEND_BUFFER = 64 * 1024
_OP_TEXT = 0x1
_OP_BINARY = 0x2
_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")
_MASK_POOL = 4096  # mask keys are drawn from os.urandom in blocks, not one syscall per frame


#: Our compression window (2**10 bytes) and zlib memLevel: small, because text messages are short
#: and audio is sent uncompressed by default (L16 barely compresses; deflating it costs CPU).
_COMPRESS_BITS = 10
_COMPRESS_MEMLEVEL = 4


def _compressor(bits: int) -> zlib._Compress:
    return zlib.compressobj(zlib.Z_BEST_SPEED, zlib.DEFLATED, -max(bits, 9), _COMPRESS_MEMLEVEL)


class WSErrorCode(enum.IntEnum):
    """libwsc's error numbering (used in mod_audio_stream's error events)."""

    IO = 1
    INVALID_HEADER = 2  # also: the server refused the upgrade (see WSError.http_status)
    SERVER_MASKED = 3
    NOT_SUPPORTED = 4
    PING_TIMEOUT = 5
    CONNECT_FAILED = 6  # TCP or DNS
    TLS_INIT_FAILED = 7
    SSL_HANDSHAKE_FAILED = 8
    SSL_ERROR = 9  # certificate verification
    TIMEOUT = 10
    PROTOCOL = 11


class WSError(Exception):
    """A connection failure, with libwsc's code and, for a refused upgrade, the HTTP status."""

    def __init__(self, code: int, message: str, http_status: int | None = None) -> None:
        super().__init__(f"[{int(code)}] {message}")
        self.code = int(code)
        self.message = message
        self.http_status = http_status


def parse_ws_url(url: str) -> tuple[bool, str, int, str, str]:
    """Split a ws:// or wss:// URL into (secure, host, port, target, Host header value).

    Raises ValueError for anything else, so commands can validate URLs before connecting.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in URL: {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"credentials in a WebSocket URL are not supported: {url!r}")
    port = parts.port  # raises ValueError when out of range or not a number
    secure = scheme == "wss"
    default = 443 if secure else 80
    if port is None:
        port = default
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        is_v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        is_v6 = False
    host_header = f"[{host}]" if is_v6 else host
    if port != default:
        host_header += f":{port}"
    return secure, host, port, target, host_header


class _State(enum.Enum):
    IDLE = 0
    CONNECTING = 1
    OPEN = 2
    CLOSING = 3
    CLOSED = 4


class WebSocketClient:
    """One WebSocket connection, used once: connect(), send..., then close() or abort().

    Callbacks run in the reader greenlet (on_close possibly in the greenlet calling close/abort or
    in a send path that found the socket dead); they must not block for long. `on_close` is called
    exactly once for a connection that opened, never when `connect()` raises.
    """

    def __init__(
        self,
        url: str,
        *,
        on_text: Callable[[str], None],
        on_binary: Callable[[bytes], None],
        on_close: Callable[[int, str], None],
        headers: Sequence[tuple[str, str]] = (),
        deflate: bool = True,
        connect_timeout: float = 5.0,
        close_timeout: float = 2.0,
        heartbeat: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_send_buffer: int = 1 << 20,
        compress_binary: bool = False,
    ) -> None:
        self.url = url
        self._secure, self._host, self._port, self._target, self._host_header = parse_ws_url(url)
        self._on_text = on_text
        self._on_binary = on_binary
        self._on_close = on_close
        # A Sec-WebSocket-Protocol header is wsproto's `subprotocols` (else wsproto would refuse
        # the server's choice as unrequested).
        self._subprotocols = [
            p.strip() for k, v in headers if k.lower() == "sec-websocket-protocol"
            for p in v.split(",") if p.strip()
        ]
        self._headers = [(k, v) for k, v in headers if k.lower() != "sec-websocket-protocol"]
        self._deflate = deflate
        self._connect_timeout = connect_timeout
        self._close_timeout = close_timeout
        self._heartbeat = heartbeat if heartbeat and heartbeat > 0 else None
        self._ssl_context = ssl_context
        self._max_send_buffer = max_send_buffer
        self._compress_binary = compress_binary

        self._state = _State.IDLE
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._sock: gsocket.socket | None = None
        self._send = None  # the per-frame send, set when the connection opens
        self._reader: gevent.Greenlet | None = None
        self._writer: gevent.Greenlet | None = None
        self._pinger: gevent.Greenlet | None = None
        self._out = bytearray()  # bytes waiting for the writer, in send order
        self._inflight = 0  # bytes the writer took from _out and has not yet handed to the kernel
        self._closed = gevent.event.Event()
        self._pong = gevent.event.Event()
        self._close_code = 1000
        self._close_reason = ""
        self._close_deadline = 0.0
        self._text_parts: list[str] = []
        self._bin_parts: list[bytes] = []
        self._last_out = 0.0
        self._compressor: zlib._Compress | None = None
        self._compress_bits = 15
        self._compress_reset = False  # client_no_context_takeover was negotiated
        self._masks = b""
        self._mask_at = _MASK_POOL
        self._wbuf = bytearray()
        self._wptr = _mask_ffi.NULL

        self.deflate_negotiated = False
        #: True while bytes wait for the kernel (the peer or the network is slow); `drained` is
        #: set when they are all handed over again (or the connection is gone).
        self.congested = False
        self.drained = gevent.event.Event()
        self.drained.set()
        self.dropped = 0
        self.last_error: WSError | None = None
        self.http_status: int | None = None
        self.pings_sent = 0

    # ------------------------------------------------------------------ state

    @property
    def is_open(self) -> bool:
        return self._state is _State.OPEN

    @property
    def buffered(self) -> int:
        """Bytes accepted but not yet handed to the kernel."""
        return len(self._out) + self._inflight

    # ---------------------------------------------------------------- connect

    def connect(self) -> None:
        """Open TCP (+TLS) and do the upgrade, all within connect_timeout; raises WSError.

        Blocks the calling greenlet only. On success spawns the reader (and heartbeat) greenlets.
        """
        if self._state is not _State.IDLE:
            raise WSError(WSErrorCode.IO, "this client was already used; make a new one")
        self._state = _State.CONNECTING
        phase = "connecting"
        timer = gevent.Timeout(self._connect_timeout)
        timer.start()
        try:
            phase = "TCP connect"
            self._sock = self._open_tcp()
            if self._secure:
                phase = "TLS handshake"
                self._sock = self._open_tls(self._sock)
            phase = "WebSocket upgrade"
            self._upgrade(self._sock)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            self._connect_failed(WSError(WSErrorCode.TIMEOUT, f"timed out during {phase}"))
        except WSError as exc:
            self._connect_failed(exc)
        except ssl.SSLError as exc:  # an alert after the handshake (TLS 1.3: a refused
            # client certificate is only reported when the client reads): libwsc's SSL_ERROR
            self._connect_failed(WSError(WSErrorCode.SSL_ERROR, f"{phase}: {exc}"))
        except OSError as exc:  # e.g. reset in the middle of the upgrade
            self._connect_failed(WSError(WSErrorCode.IO, f"{phase}: {exc}"))
        except BaseException:  # e.g. our owner killed the connecting greenlet: leak nothing
            self._state = _State.CLOSED
            self._closed.set()
            if self._sock is not None:
                self._sock.close()
            raise
        finally:
            timer.close()
        if self._state is not _State.CONNECTING:  # abort() from another greenlet meanwhile
            self._connect_failed(WSError(WSErrorCode.IO, "aborted while connecting"))
        sock = self._sock
        assert sock is not None
        sock.setblocking(False)  # from now on every wait is explicit and bounded
        # The per-frame send goes straight to the kernel socket under gevent's wrapper (whose
        # only job, waiting, never happens on a non-blocking socket); TLS needs the wrapper.
        raw = getattr(sock, "_sock", None)
        self._send = raw.send if raw is not None and not self._secure else sock.send
        self._state = _State.OPEN
        self._last_out = monotonic()
        self._reader = gevent.spawn(self._read_loop)
        if self._heartbeat:
            self._pinger = gevent.spawn(self._ping_loop)

    def _connect_failed(self, err: WSError) -> None:
        self.last_error = err
        self._state = _State.CLOSED
        self._closed.set()
        if self._sock is not None:
            self._sock.close()
        raise err

    def _open_tcp(self) -> gsocket.socket:
        try:
            sock = gsocket.create_connection((self._host, self._port))
        except gsocket.gaierror as exc:
            msg = f"cannot resolve {self._host}: {exc}"
            raise WSError(WSErrorCode.CONNECT_FAILED, msg) from exc
        except OSError as exc:
            raise WSError(
                WSErrorCode.CONNECT_FAILED, f"cannot connect to {self._host}:{self._port}: {exc}"
            ) from exc
        with contextlib.suppress(OSError):  # audio latency: do not wait to coalesce small frames
            sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
        with contextlib.suppress(OSError):
            # A fixed send buffer: the kernel's autotuning would queue seconds of audio (up to
            # tcp_wmem's 4 MB) for a stalled endpoint before our bounded backlog ever sees it.
            sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_SNDBUF, SEND_BUFFER)
        return sock

    def _open_tls(self, raw: gsocket.socket) -> gsocket.socket:
        try:
            ctx = self._ssl_context or gevent.ssl.create_default_context()
            # gevent's SSLSocket accepts a stdlib context too, and waits cooperatively.
            tls = gevent.ssl.SSLSocket(
                sock=raw, server_hostname=self._host, _context=ctx, do_handshake_on_connect=False
            )
        except (ssl.SSLError, ValueError, OSError) as exc:
            raw.close()
            raise WSError(WSErrorCode.TLS_INIT_FAILED, f"TLS setup failed: {exc}") from exc
        self._sock = tls
        try:
            tls.do_handshake()
        except ssl.SSLCertVerificationError as exc:
            raise WSError(WSErrorCode.SSL_ERROR, f"certificate verification failed: {exc}") from exc
        except (ssl.SSLError, OSError) as exc:
            raise WSError(WSErrorCode.SSL_HANDSHAKE_FAILED, f"TLS handshake failed: {exc}") from exc
        return tls

    def _upgrade(self, sock: gsocket.socket) -> None:
        ws = self._ws
        extensions = [PerMessageDeflate()] if self._deflate else []
        try:
            request = ws.send(
                Request(
                    host=self._host_header,
                    target=self._target,
                    extra_headers=self._headers,
                    subprotocols=self._subprotocols,
                    extensions=extensions,
                )
            )
        except LocalProtocolError as exc:
            raise WSError(WSErrorCode.INVALID_HEADER, f"invalid request header: {exc}") from exc
        sock.sendall(request)
        while True:
            data = sock.recv(_RECV_SIZE)
            if not data:
                raise WSError(WSErrorCode.IO, "connection closed during the WebSocket upgrade")
            try:
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, AcceptConnection):
                        for ext in event.extensions:
                            if isinstance(ext, PerMessageDeflate):
                                self._start_deflate(ext)
                        return  # frames after the 101 stay in wsproto for the reader
                    if isinstance(event, RejectConnection):
                        self.http_status = event.status_code
                        raise WSError(
                            WSErrorCode.INVALID_HEADER,
                            f"server refused the upgrade: HTTP {event.status_code}",
                            http_status=event.status_code,
                        )
            except RemoteProtocolError as exc:
                raise WSError(WSErrorCode.INVALID_HEADER, f"bad upgrade response: {exc}") from exc

    def _start_deflate(self, ext: PerMessageDeflate) -> None:
        """Adopt the negotiated parameters for our own outgoing compression."""
        self.deflate_negotiated = True
        # A window smaller than the negotiated one is always inflatable by the peer, and it is
        # what keeps zlib's state at ~12 kB instead of ~256 kB per connection.
        self._compress_bits = min(ext.client_max_window_bits, _COMPRESS_BITS)
        self._compress_reset = ext.client_no_context_takeover
        self._compressor = _compressor(self._compress_bits)

    # ------------------------------------------------------------------- send

    def _frame(self, first: int, payload: bytes | bytearray | memoryview,
               compress: bool = False) -> memoryview:
        """One complete, masked (and, if asked and negotiated, compressed) client data frame
        (RFC 6455/7692)."""
        comp = self._compressor if compress else None
        if comp is not None:
            payload = comp.compress(payload) + comp.flush(zlib.Z_SYNC_FLUSH)
            if payload.endswith(b"\x00\x00\xff\xff"):
                payload = payload[:-4]
            first |= 0x40  # RSV1: compressed
            if self._compress_reset:
                self._compressor = _compressor(self._compress_bits)
        n = len(payload)
        if n < 126:
            hl = 2
        elif n < 65536:
            hl = 4
        else:
            hl = 10
        at = self._mask_at
        if at >= _MASK_POOL:
            self._masks = os.urandom(_MASK_POOL)
            at = 0
        self._mask_at = at + 4
        # Built in one reused buffer and masked in place in C: nothing allocated per frame.
        # (Whatever the kernel does not take at once is copied out by _enqueue.)
        size = hl + 4 + n
        buf = self._wbuf
        if len(buf) < size:
            buf = self._wbuf = bytearray(max(size, 2 * len(buf)))
            self._wptr = _mask_ffi.from_buffer(buf)
        if hl == 2:
            buf[0] = first
            buf[1] = 0x80 | n
        elif hl == 4:
            _H16.pack_into(buf, 0, first, 0xFE, n)
        else:
            _H64.pack_into(buf, 0, first, 0xFF, n)
        end = hl + 4
        buf[hl:end] = self._masks[at : at + 4]
        buf[end:size] = payload
        _mask_lib.eas_mask(self._wptr + end, n, self._wptr + hl)
        return memoryview(buf)[:size]

    def send_binary(self, data: bytes) -> bool:
        """Queue one binary message; False when not open or the send buffer is full (dropped)."""
        if self._state is not _State.OPEN:
            return False
        if (self._out or self._inflight) and (
            self.buffered + len(data) + 14 > self._max_send_buffer
        ):
            self.dropped += 1
            return False
        return self._enqueue(self._frame(0x80 | _OP_BINARY, data, self._compress_binary))

    def send_text(self, text: str) -> bool:
        """Queue one text message; False when not open or the send buffer is full (dropped)."""
        if self._state is not _State.OPEN:
            return False
        if (self._out or self._inflight) and (
            self.buffered + len(text) + 14 > self._max_send_buffer
        ):
            self.dropped += 1
            return False
        return self._enqueue(self._frame(0x80 | _OP_TEXT, text.encode(), True))

    def _enqueue(self, wire: bytes | memoryview) -> bool:
        """Hand framed bytes to the kernel now if nothing is queued, else queue them in order."""
        self._last_out = monotonic()
        if self._out or self._inflight:
            self._out += wire
            return True
        try:
            sent = self._send(wire)  # non-blocking socket: never waits, never switches
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            sent = 0
        except OSError as exc:
            self._lost(WSError(WSErrorCode.IO, f"send failed: {exc}"), 1006, f"send failed: {exc}")
            return False
        if sent == len(wire):
            return True
        # Kernel buffer full: the rest (a partial frame must be completed) goes to the writer.
        self._out += memoryview(wire)[sent:]
        self.congested = True
        self.drained.clear()
        if self._writer is None:
            self._writer = gevent.spawn(self._write_loop)
        return True

    def _send_control(self, event: Ping | Pong | CloseConnection) -> bool:
        """Pongs, pings and close frames share the ordered path but are never dropped."""
        try:
            wire = self._ws.send(event)
        except LocalProtocolError:
            return False  # e.g. a pong after our close frame: nothing more may be sent
        return self._enqueue(wire)

    def _write_loop(self) -> None:
        try:
            while self._out:
                chunk = bytes(self._out)
                self._out.clear()
                self._inflight = len(chunk)
                self._write_all(chunk)
                self._inflight = 0
        finally:
            self._writer = None
            self.congested = False
            self.drained.set()

    def _write_all(self, chunk: bytes) -> None:
        sock = self._sock
        view = memoryview(chunk)
        pos = 0
        total = len(chunk)
        while pos < total:
            try:
                sent = sock.send(view[pos:])
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                sent = 0
            except OSError as exc:
                self._lost(WSError(WSErrorCode.IO, f"send failed: {exc}"), 1006, str(exc))
                return
            if sent:
                pos += sent
                self._inflight = total - pos
                continue
            try:
                wait_write(sock.fileno(), timeout=WRITE_STALL_TIMEOUT)
            except TimeoutError:
                msg = f"peer accepted no data for {WRITE_STALL_TIMEOUT:g} s"
                self._lost(WSError(WSErrorCode.TIMEOUT, msg), 1006, msg)
                return

    # ------------------------------------------------------------------- read

    def _read_loop(self) -> None:
        sock = self._sock
        fd = sock.fileno()
        try:
            self._dispatch()  # frames that arrived together with the 101 response
            while self._state is _State.OPEN or self._state is _State.CLOSING:
                try:
                    data = sock.recv(_RECV_SIZE)
                except (BlockingIOError, ssl.SSLWantReadError):
                    if not self._wait_readable(fd):
                        return
                    continue
                except ssl.SSLWantWriteError:
                    wait_write(fd, timeout=_READ_POLL)
                    continue
                except OSError as exc:
                    self._peer_gone(f"receive failed: {exc}")
                    return
                if not data:
                    self._peer_gone("connection closed by peer")
                    return
                try:
                    self._ws.receive_data(data)
                except RemoteProtocolError as exc:  # pragma: no cover - wsproto raises in events
                    self._lost(WSError(WSErrorCode.PROTOCOL, str(exc)), 1002, str(exc))
                    return
                self._dispatch()
        except gevent.GreenletExit:
            pass

    def _wait_readable(self, fd: int) -> bool:
        """Wait for input, bounded; False when a pending close ran out of time (and was ended)."""
        timeout = _READ_POLL
        if self._state is _State.CLOSING:
            timeout = self._close_deadline - monotonic()
            if timeout <= 0:
                self._finish(self._close_code, self._close_reason)
                return False
        with contextlib.suppress(TimeoutError):  # gevent raises socket.timeout, a TimeoutError
            wait_read(fd, timeout=timeout)
        return True

    def _peer_gone(self, why: str) -> None:
        if self._state is _State.CLOSING:  # we asked to close; the server just hung up first
            self._finish(self._close_code, self._close_reason)
        else:
            self._lost(WSError(WSErrorCode.IO, why), 1006, why)

    def _dispatch(self) -> None:
        for event in self._ws.events():
            if isinstance(event, TextMessage):
                if event.message_finished and not self._text_parts:
                    self._deliver(self._on_text, event.data)
                else:
                    self._text_parts.append(event.data)
                    if event.message_finished:
                        text = "".join(self._text_parts)
                        self._text_parts.clear()
                        self._deliver(self._on_text, text)
            elif isinstance(event, BytesMessage):
                if event.message_finished and not self._bin_parts:
                    self._deliver(self._on_binary, bytes(event.data))
                else:
                    self._bin_parts.append(bytes(event.data))
                    if event.message_finished:
                        data = b"".join(self._bin_parts)
                        self._bin_parts.clear()
                        self._deliver(self._on_binary, data)
            elif isinstance(event, Ping):
                self._send_control(event.response())
            elif isinstance(event, Pong):
                self._pong.set()
            elif isinstance(event, CloseConnection):
                self._on_close_frame(event)
                return
            if self._state is _State.CLOSED:  # a callback closed or aborted us
                return

    def _on_close_frame(self, event: CloseConnection) -> None:
        state = self._ws.state
        reason = event.reason or ""
        if state is ConnectionState.CLOSED:  # the server's answer to our close
            self._finish(event.code, reason)
        elif state is ConnectionState.REMOTE_CLOSING:  # the server closes: answer, then go
            self._send_control(event.response())
            writer = self._writer
            if writer is not None:
                writer.join(timeout=self._close_timeout)
            self._finish(event.code, reason)
        else:  # wsproto could not parse the server's frames; it reports that as a close event
            code = WSErrorCode.SERVER_MASKED if "mask" in reason.lower() else WSErrorCode.PROTOCOL
            self._send_control(CloseConnection(code=event.code, reason=reason[:120]))
            self._lost(WSError(code, reason), event.code, reason)

    def _deliver(self, callback: Callable[[Any], None], data: str | bytes) -> None:
        try:
            callback(data)
        except Exception:
            log.exception("%s: message callback failed", self.url)

    # -------------------------------------------------------------- heartbeat

    def _ping_loop(self) -> None:
        interval = self._heartbeat
        assert interval is not None
        try:
            while self._state is _State.OPEN:
                idle = monotonic() - self._last_out
                if idle < interval:
                    gevent.sleep(interval - idle)
                    continue
                self._pong.clear()
                self.pings_sent += 1
                self._send_control(Ping(payload=b"esl-audio-stream"))
                if not self._pong.wait(timeout=interval) and self._state is _State.OPEN:
                    msg = f"no pong within {interval:g} s"
                    self._lost(WSError(WSErrorCode.PING_TIMEOUT, msg), 1006, "ping timeout")
                    return
        except gevent.GreenletExit:
            pass

    # ------------------------------------------------------------------ close

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close handshake bounded by close_timeout, then the socket is closed, greenlets ended.

        on_close gets the server's answering code and reason (or ours if it never answered).
        """
        if self._state is _State.OPEN:
            self._state = _State.CLOSING
            self._close_code, self._close_reason = code, reason
            self._close_deadline = monotonic() + self._close_timeout
            self._send_control(CloseConnection(code=code, reason=reason))
        elif self._state is not _State.CLOSING:
            if self._state is not _State.CLOSED:
                self.abort()
            return
        if gevent.getcurrent() is self._reader:
            return  # called from a callback: the reader finishes the handshake or times it out
        if not self._closed.wait(timeout=max(0.0, self._close_deadline - monotonic())):
            self._finish(self._close_code, self._close_reason)
        reader = self._reader
        if reader is not None and reader is not gevent.getcurrent():
            reader.join(timeout=1.0)  # it may still be returning from on_close

    def abort(self) -> None:
        """Immediate teardown, no handshake; on_close(1006, "aborted") if it was open."""
        if self._state is _State.CONNECTING or self._state is _State.IDLE:
            self._state = _State.CLOSED  # connect() notices and raises
            self._closed.set()
            if self._sock is not None:
                self._sock.close()
            return
        self._finish(1006, "aborted")

    def _lost(self, err: WSError, code: int, reason: str) -> None:
        if self._state is not _State.CLOSED:
            self.last_error = err
            self._finish(code, reason)

    def _finish(self, code: int, reason: str) -> None:
        """End everything once: greenlets (except the caller), socket, buffers; then on_close."""
        if self._state is _State.CLOSED:
            return
        self.drained.set()  # nobody waits for a dead connection to drain
        self._state = _State.CLOSED
        current = gevent.getcurrent()
        # End the greenlets before closing the socket: their fd watchers must not outlive the fd.
        for glet in (self._reader, self._writer, self._pinger):
            if glet is not None and glet is not current and not glet.dead:
                glet.kill(block=True, timeout=1.0)
        self._writer = None
        if self._sock is not None:
            self._sock.close()
        self._out.clear()
        self._inflight = 0
        self._closed.set()
        try:
            self._on_close(code, reason)
        except Exception:
            log.exception("%s: on_close callback failed", self.url)

    def __repr__(self) -> str:
        return f"WebSocketClient({self.url!r}, {self._state.name.lower()})"
