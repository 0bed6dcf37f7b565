"""One WebSocket connection: wsproto (sans-IO) over a gevent socket, `ssl` for wss.

Why this shape:
- wsproto does the upgrade (ws/handshake.py), parses everything received and builds the control
  frames; our data frames (ws/framing.py) are never fragmented, so its state stays valid.
- Sending never waits and queues no message (ws/outgoing.py): a message is either the
  connection's (sent, or the rest of it kept) or still its owner's, refused while the kernel
  will not take more (`congested`); the owner keeps the one queue and moves it in as the socket
  drains (`on_blocked`, `wait_writable`, `flush`).
- The connection owns its socket, its reader and heartbeat greenlets and its write watcher, and
  ends them in one place (`_finish`), then calls on_close exactly once for a connection that
  opened. Every wait is bounded: connect_timeout (connect and upgrade), close_timeout (the close
  handshake), WRITE_STALL_TIMEOUT (a peer that takes no byte), the heartbeat (a silent peer).
- Error codes follow libwsc's numbering (ws/errors.py), which mod_audio_stream reports.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import ssl
from collections.abc import Callable, Sequence
from time import monotonic
from typing import Any

import gevent
import gevent.event
from gevent import socket as gsocket
from gevent.socket import wait_read, wait_write
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from .errors import WSError, WSErrorCode
from .framing import FrameWriter
from .handshake import handshake_tls, open_tcp, upgrade, upgrade_request, wrap_tls
from .outgoing import Outgoing
from .url import parse_ws_url

log = logging.getLogger(__name__)

_RECV_SIZE = 65536
_READ_POLL = 5.0  # idle wake-up of the reader; liveness itself is the heartbeat's job


class _State(enum.Enum):
    IDLE = 0
    CONNECTING = 1
    OPEN = 2
    CLOSING = 3
    CLOSED = 4


_OPEN = _State.OPEN


def _refuse(_message: object) -> bool:
    """send_binary / send_text of a connection that is not open: the caller keeps the message."""
    return False


class WebSocketConnection:
    """One WebSocket connection, used once: connect(), send..., then close() or abort().

    Callbacks run in the reader greenlet, or in whichever greenlet's send or close found the
    socket dead or full; they must not block. `on_close(code, reason)` is called exactly once for
    a connection that opened, never when `connect()` raises; `on_blocked()` when the kernel
    stops taking bytes (the owner then waits with `wait_writable` and calls `flush`).
    """

    def __init__(
        self,
        url: str,
        *,
        on_text: Callable[[str], None],
        on_binary: Callable[[bytes], None],
        on_close: Callable[[int, str], None],
        on_blocked: Callable[[], None] | None = None,
        headers: Sequence[tuple[str, str]] = (),
        deflate: bool = True,
        connect_timeout: float = 5.0,
        close_timeout: float = 2.0,
        heartbeat: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        compress_binary: bool = False,
    ) -> None:
        self.url = url
        self._secure, self._host, self._port, self._target, self._host_header = parse_ws_url(url)
        self._on_text = on_text
        self._on_binary = on_binary
        self._on_close = on_close
        self._on_blocked = on_blocked
        self._request = upgrade_request(self._host_header, self._target, headers, deflate)
        self._connect_timeout = connect_timeout
        self._close_timeout = close_timeout
        self._heartbeat = heartbeat if heartbeat and heartbeat > 0 else None
        self._ssl_context = ssl_context
        self._compress_binary = compress_binary

        self._state = _State.IDLE
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._frames = FrameWriter()
        self._sock: gsocket.socket | None = None
        self._out: Outgoing | None = None  # the sending side, once open
        #: The per-frame send (and its text twin): the Outgoing's own methods while open, so a
        #: frame costs one call; `_refuse` before and after.
        self.send_binary: Callable[[bytes], bool] = _refuse
        self.send_text: Callable[[str], bool] = _refuse
        self.send_text_utf8: Callable[[bytes], bool] = _refuse  # audio in text (Twilio)
        self._reader: gevent.Greenlet | None = None
        self._pinger: gevent.Greenlet | None = None
        self._closed = gevent.event.Event()
        self._pong = gevent.event.Event()
        self._close_code = 1000
        self._close_reason = ""
        self._close_deadline = 0.0
        self._text_parts: list[str] = []
        self._bin_parts: list[bytes] = []

        self.last_error: WSError | None = None
        self.http_status: int | None = None
        self.pings_sent = 0

    # ------------------------------------------------------------------ state

    @property
    def is_open(self) -> bool:
        return self._state is _OPEN

    @property
    def congested(self) -> bool:
        """Bytes wait for the kernel: data messages are refused until `flush()` empties it."""
        return self._out is not None and self._out.congested

    @property
    def buffered(self) -> int:
        """Bytes waiting for the kernel: at most the rest of one message and control frames."""
        return self._out.buffered if self._out is not None else 0

    @property
    def deflate_negotiated(self) -> bool:
        return self._frames.deflate

    @property
    def outgoing(self) -> Outgoing | None:
        """The sending side while open (the native pump sends through it, native/pump.py)."""
        return self._out

    # ---------------------------------------------------------------- connect

    def connect(self) -> None:
        """Open TCP (+TLS) and do the upgrade, all within connect_timeout; raises WSError.

        Blocks the calling greenlet only. On success spawns the reader (and heartbeat) greenlets.
        """
        if self._state is not _State.IDLE:
            raise WSError(WSErrorCode.IO, "this connection was already used; make a new one")
        self._state = _State.CONNECTING
        phase = "connecting"
        timer = gevent.Timeout(self._connect_timeout)
        timer.start()
        try:
            phase = "TCP connect"
            self._sock = open_tcp(self._host, self._port)
            if self._secure:
                phase = "TLS handshake"
                self._sock = wrap_tls(self._sock, self._host, self._ssl_context)
                handshake_tls(self._sock)
            phase = "WebSocket upgrade"
            deflate = upgrade(self._sock, self._ws, self._request)
            if deflate is not None:
                self._frames.use_deflate(deflate.client_max_window_bits,
                                         deflate.client_no_context_takeover)
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
        self._out = out = Outgoing(sock, secure=self._secure, frames=self._frames,
                                   compress_binary=self._compress_binary,
                                   on_blocked=self._on_blocked, on_error=self._send_failed)
        self.send_binary = out.send_binary
        self.send_text = out.send_text
        self.send_text_utf8 = out.send_text_utf8
        self._state = _OPEN
        self._reader = gevent.spawn(self._read_loop)
        if self._heartbeat:
            self._pinger = gevent.spawn(self._ping_loop)

    def _connect_failed(self, err: WSError) -> None:
        self.last_error = err
        self.http_status = err.http_status
        self._state = _State.CLOSED
        self._closed.set()
        if self._sock is not None:
            self._sock.close()
        raise err

    # ------------------------------------------------------------------- send

    def flush(self) -> bool:
        """Hand waiting bytes to the kernel without waiting; True when none wait any more."""
        return self._out.flush() if self._out is not None else True

    def wait_writable(self, timeout: float) -> bool:
        """Wait at most `timeout` for the kernel to take more; True when it will. A peer that
        took no byte for WRITE_STALL_TIMEOUT is gone: the connection ends (TIMEOUT), False."""
        return self._out.wait_writable(timeout) if self._out is not None else False

    def _send_control(self, event: Ping | Pong | CloseConnection) -> None:
        try:
            wire = self._ws.send(event)
        except LocalProtocolError:
            return  # e.g. a pong after our close frame: nothing more may be sent
        if self._out is not None:
            self._out.send_control(wire, droppable=isinstance(event, Pong))

    def _send_failed(self, err: WSError) -> None:
        """A send found the socket dead (or a peer that takes nothing). The per-frame path runs
        on the hub, where nothing may block (ending the greenlets, the owner's on_close): there
        the ending is a greenlet's job (it ends itself: `_lost` is all it does); the caller
        already sees the send refused."""
        if self._state is _State.CLOSED:
            return
        if gevent.getcurrent() is gevent.get_hub():
            gevent.spawn(self._lost, err, 1006, err.message)
        else:
            self._lost(err, 1006, err.message)

    # ------------------------------------------------------------------- read

    def _read_loop(self) -> None:
        sock = self._sock
        fd = sock.fileno()
        try:
            self._dispatch()  # frames that arrived together with the 101 response
            while self._state is _OPEN or self._state is _State.CLOSING:
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
            if not self.flush():  # closed from a callback: nobody else pushes the close frame
                timeout = min(timeout, 0.05)
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
                self._assemble(self._text_parts, event.data, event.message_finished,
                               self._on_text, "".join)
            elif isinstance(event, BytesMessage):
                self._assemble(self._bin_parts, bytes(event.data), event.message_finished,
                               self._on_binary, b"".join)
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
            if self._out is not None:
                self._out.drain(monotonic() + self._close_timeout)
            self._finish(event.code, reason)
        else:  # wsproto could not parse the server's frames; it reports that as a close event
            code = WSErrorCode.SERVER_MASKED if "mask" in reason.lower() else WSErrorCode.PROTOCOL
            self._send_control(CloseConnection(code=event.code, reason=reason[:120]))
            self._lost(WSError(code, reason), event.code, reason)

    def _assemble(self, parts: list[Any], data: str | bytes, finished: bool,
                  callback: Callable[[Any], None], join: Callable[[list[Any]], Any]) -> None:
        """A message in one frame goes as it is; a fragmented one once its last part came."""
        if finished and not parts:
            self._deliver(callback, data)
            return
        parts.append(data)
        if finished:
            whole = join(parts)
            parts.clear()
            self._deliver(callback, whole)

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
            while self._state is _OPEN:
                idle = monotonic() - self._out.last_out  # type: ignore[union-attr]
                if idle < interval:
                    gevent.sleep(interval - idle)
                    continue
                self._pong.clear()
                self.pings_sent += 1
                self._send_control(Ping(payload=b"esl-audio-stream"))
                if not self._pong.wait(timeout=interval) and self._state is _OPEN:
                    msg = f"no pong within {interval:g} s"
                    self._lost(WSError(WSErrorCode.PING_TIMEOUT, msg), 1006, "ping timeout")
                    return
        except gevent.GreenletExit:
            pass

    # ------------------------------------------------------------------ close

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close handshake bounded by close_timeout (what waits goes first), then the socket is
        closed and the greenlets ended. on_close gets the server's answering code and reason
        (or ours if it never answered)."""
        if self._state is _OPEN:
            self._state = _State.CLOSING
            self.send_binary = self.send_text = self.send_text_utf8 = _refuse
            self._close_code, self._close_reason = code, reason
            self._close_deadline = monotonic() + self._close_timeout
            self._send_control(CloseConnection(code=code, reason=reason))
        elif self._state is not _State.CLOSING:
            if self._state is not _State.CLOSED:
                self.abort()
            return
        if gevent.getcurrent() is self._reader:
            return  # called from a callback: the reader finishes the handshake or times it out
        if self._out is not None:
            self._out.drain(self._close_deadline)
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
        """End everything once, then on_close; nothing in between yields, so no other greenlet
        can find the connection closed before its owner has been told."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        self.send_binary = self.send_text = self.send_text_utf8 = _refuse
        if self._out is not None:
            self._out.close()  # its watcher goes; an owner waiting to write wakes
        current = gevent.getcurrent()
        ending = [glet for glet in (self._reader, self._pinger)
                  if glet is not None and glet is not current and not glet.dead]
        for glet in ending:
            glet.kill(block=False)  # delivered before they can wait (or read) again
        try:
            self._on_close(code, reason)
        except Exception:
            log.exception("%s: on_close callback failed", self.url)
        finally:
            for glet in ending:  # gone before the socket closes: no wait may outlive the fd
                glet.join(timeout=1.0)
            if self._sock is not None:
                self._sock.close()
            self._closed.set()

    def __repr__(self) -> str:
        return f"WebSocketConnection({self.url!r}, {self._state.name.lower()})"
