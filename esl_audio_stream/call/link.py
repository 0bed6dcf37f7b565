"""One stream's WebSocket over time: reconnection that loses nothing it holds, and backpressure.

A connection (ws/connection.py) is one TCP connection; a `Link` is what the stream talks to for
the whole call. Between the stream and the socket there is ONE queue, the `Backlog`
(call/backlog.py: bounded in bytes of audio, the oldest audio dropped and counted, texts kept in
order); the connection itself keeps at most the rest of one partly sent frame.

The per-frame path calls `link.send(chunk)`, a bound method swapped with the state, so the common
case costs one attribute read and one call: when LIVE, `_send_live` (straight into the
connection); in every other state the backlog's own push (`_to_backlog`), or `_refuse` once the
link is closing.

The state (`LinkState`, its transitions in `_NEXT`, changed only by `_set_state`):
- CONNECTING: the first connection is being made; texts sent meanwhile wait in the backlog.
- LIVE: connected, nothing waits anywhere.
- BACKLOGGED: connected, the kernel stopped taking bytes (the connection's `on_blocked`) or the
  backlog still holds messages: audio queues, and the worker moves the backlog into the
  connection as the socket drains, then goes LIVE. A peer that takes nothing for the
  connection's WRITE_STALL_TIMEOUT is lost (as a drop).
- RECONNECTING: the connection dropped (no close frame, or a close code in RETRY_CODES):
  `mod_audio_stream::disconnect` fired; the worker retries with capped exponential backoff and
  jitter, each failed try firing `mod_audio_stream::error` with `retries`, `wait_time` (ms) and
  `http_status`. On success: the greeting first (the protocol's: mod_audio_stream's metadata,
  Twilio's connected + start), `mod_audio_stream::connect`, then BACKLOGGED (the backlog, in
  order, then live audio).
- CLOSING -> CLOSED: `close()` (everything queued goes first, bounded), or `abort()`; CLOSED also
  when the endpoint closed deliberately (the stream ends: `on_gone`) or the retries ran out.

ONE worker greenlet at a time does all the waiting (flushing or reconnecting, by state), so a
connection that dies while the worker is using it only changes the state, and the same worker
goes on. Audio dropped by the backlog is reported in error events (`dropped`) about once a second
while it lasts and when the link is live again.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable, Sequence
from time import monotonic
from typing import TYPE_CHECKING, Protocol

import gevent

from ..app import events
from ..ws.connection import WebSocketConnection
from ..ws.errors import WSError, WSErrorCode
from .backlog import Backlog

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

#: Close codes that mean "try again": no close frame at all (a drop; also our ping timeout),
#: going away, server error, service restart, try again later, bad gateway. Any other code is a
#: deliberate close (1000, a policy or protocol refusal, an application's 3xxx/4xxx): retrying
#: would only be refused again, so the stream ends with it.
RETRY_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014})

BACKOFF_FIRST = 0.25
BACKOFF_MAX = 5.0
_STALL_POLL = 1.0  # while the peer takes nothing: wake this often to report drops
_ENDING_POLL = 0.01


class Connection(Protocol):
    """What a Link needs of a connection (ws/connection.py's, or a test's script)."""

    last_error: WSError | None

    @property
    def is_open(self) -> bool: ...
    @property
    def congested(self) -> bool: ...
    def connect(self) -> None: ...
    def send_binary(self, data: bytes) -> bool: ...
    def send_text(self, text: str) -> bool: ...
    def send_text_utf8(self, data: bytes) -> bool: ...
    def flush(self) -> bool: ...
    def wait_writable(self, timeout: float) -> bool: ...
    def close(self, code: int = 1000, reason: str = "") -> None: ...
    def abort(self) -> None: ...


class LinkState(enum.Enum):
    CONNECTING = "connecting"
    LIVE = "live"
    BACKLOGGED = "backlogged"
    RECONNECTING = "reconnecting"
    CLOSING = "closing"
    CLOSED = "closed"


_S = LinkState
_NEXT: dict[LinkState, frozenset[LinkState]] = {
    _S.CONNECTING: frozenset({_S.BACKLOGGED, _S.CLOSING, _S.CLOSED}),
    _S.LIVE: frozenset({_S.BACKLOGGED, _S.RECONNECTING, _S.CLOSING, _S.CLOSED}),
    _S.BACKLOGGED: frozenset({_S.LIVE, _S.RECONNECTING, _S.CLOSING, _S.CLOSED}),
    _S.RECONNECTING: frozenset({_S.BACKLOGGED, _S.CLOSING, _S.CLOSED}),
    _S.CLOSING: frozenset({_S.CLOSED}),
    _S.CLOSED: frozenset(),
}
_QUEUEING = frozenset({_S.CONNECTING, _S.BACKLOGGED, _S.RECONNECTING})


class Link:
    """One stream's WebSocket for the whole call: connect(), send / send_text, then close() or
    abort(). `send` is the per-frame path (an attribute, swapped with the state)."""

    def __init__(
        self,
        url: str,
        *,
        uuid: str,
        fire: Callable[[str, str], None],
        on_text: Callable[[str], None],
        on_binary: Callable[[bytes], None],
        on_gone: Callable[[int, str], None],
        metadata: str | None,
        reconnect: bool,
        greeting: Callable[[], Sequence[str]] | None = None,
        audio_as_text: bool = False,
        backlog_bytes: int,
        headers: Sequence[tuple[str, str]] = (),
        deflate: bool = True,
        heartbeat: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 5.0,
        close_timeout: float = 2.0,
        max_tries: int = 0,
        connection_factory: Callable[..., Connection] = WebSocketConnection,
    ) -> None:
        self.url = url
        self.uuid = uuid
        self._fire = fire
        self._on_text = on_text
        self._on_binary = on_binary
        self._on_gone = on_gone
        self.metadata = metadata
        #: What opens every connection; None: the metadata (when there is one).
        self._greeting = greeting
        #: Audio messages go as text frames (Twilio's JSON, already UTF-8), not binary ones.
        self._audio_as_text = audio_as_text
        self.reconnect = reconnect
        self.max_tries = max_tries
        self._factory = connection_factory
        self._close_timeout = close_timeout
        self._conn_args = {
            "headers": headers,
            "deflate": deflate,
            "heartbeat": heartbeat,
            "ssl_context": ssl_context,
            "connect_timeout": connect_timeout,
            "close_timeout": close_timeout,
        }
        self._backlog = Backlog(backlog_bytes)
        self._to_backlog: Callable[[bytes], bool] = self._backlog.push_audio
        self._state = LinkState.CONNECTING
        self.send: Callable[[bytes], bool] = self._to_backlog
        self.ws: Connection | None = None  # the connection in use (LIVE, BACKLOGGED, CLOSING)
        self._put: Callable[[bytes], bool] | None = None  # its send_binary, for _send_live
        self._worker: gevent.Greenlet | None = None
        self._next_report = 0.0
        self.reconnects = 0
        #: Told of each new state: a native pump (native/pump.py) sends only while LIVE.
        self.on_state: Callable[[LinkState], None] | None = None

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def is_open(self) -> bool:
        return self.ws is not None and self.ws.is_open

    @property
    def dropped_total(self) -> int:
        """Audio messages the backlog dropped (oldest first), in all."""
        return self._backlog.dropped

    def _set_state(self, new: LinkState) -> None:
        """The one place the state, and with it the per-frame `send`, changes."""
        old = self._state
        if new not in _NEXT[old]:
            raise RuntimeError(f"link {self.uuid}: no transition {old.value} -> {new.value}")
        self._state = new
        if new is LinkState.LIVE:
            self.send = self._send_live
        elif new in _QUEUEING:
            self.send = self._to_backlog
        else:
            self.send = self._refuse
        if self.on_state is not None:
            self.on_state(new)

    # -- connecting ---------------------------------------------------------------------------

    def _new_connection(self) -> Connection:
        conn: Connection | None = None

        def on_close(code: int, reason: str) -> None:
            self._conn_closed(conn, code, reason)

        conn = self._factory(self.url, on_text=self._on_text, on_binary=self._on_binary,
                             on_close=on_close, on_blocked=self._conn_blocked, **self._conn_args)
        return conn

    def connect(self) -> None:
        """The first connection: no retry here (the start command answers); raises WSError."""
        conn = self._new_connection()
        conn.connect()
        self._greet(conn)
        self._take(conn)
        # The backlog (texts sent while connecting) now, without yielding, so no frame can
        # overtake it; what the kernel will not take yet is the worker's.
        if self._push(conn):
            self._set_state(LinkState.LIVE)
        elif self._state is LinkState.BACKLOGGED:
            self._wake()

    def _greet(self, conn: Connection) -> None:
        """The greeting (the protocol's; else the metadata), first on every connection;
        WSError if the connection died on it."""
        if self._greeting is not None:
            texts: Sequence[str] = self._greeting()
        else:
            texts = (self.metadata,) if self.metadata else ()
        for text in texts:
            if not conn.send_text(text):
                err = conn.last_error or WSError(WSErrorCode.IO, "connection lost as it opened")
                conn.abort()
                raise err

    def _audio_sender(self, conn: Connection) -> Callable[[bytes], bool]:
        return conn.send_text_utf8 if self._audio_as_text else conn.send_binary

    def _take(self, conn: Connection) -> None:
        """Use `conn` from now on: the backlog goes first, then live audio."""
        if self._state is LinkState.CLOSING or self._state is LinkState.CLOSED:
            conn.abort()  # the link was closed while this connection was being made
            raise WSError(WSErrorCode.IO, "closed while connecting")
        self.ws = conn
        self._put = self._audio_sender(conn)
        self._set_state(LinkState.BACKLOGGED)

    def _push(self, conn: Connection) -> bool:
        """Hand the connection what waits (the rest of its frame, then the backlog) without
        waiting; True when all of it is with the kernel."""
        if not conn.flush():
            return False
        backlog = self._backlog
        if backlog:
            send_audio, send_text = self._audio_sender(conn), conn.send_text
            while backlog:
                item = backlog.pop()
                if not (send_text(item) if item.__class__ is str else send_audio(item)):
                    backlog.push_front(item)  # congested, or it died on this send
                    return False
        return not conn.congested

    # -- the per-frame path -------------------------------------------------------------------

    def _send_live(self, chunk: bytes) -> bool:
        if self._put(chunk):  # type: ignore[misc]
            return True
        return self._refused(chunk)

    def refused(self, chunk: bytes) -> bool:
        """A chunk the connection did not take when another sender (the native pump) tried."""
        return self._refused(chunk)

    def _refused(self, chunk: bytes) -> bool:
        """The connection did not take it: it died (its on_close moved us on), or it is
        congested (its on_blocked did, unless a test's connection does not say)."""
        if self._state is LinkState.LIVE:
            self._set_state(LinkState.BACKLOGGED)
            self._wake()
        return self.send(chunk)

    def _refuse(self, chunk: bytes) -> bool:
        return False  # closing or closed: nothing will carry it

    def send_text(self, text: str) -> bool:
        """Texts keep their order with the audio; while not LIVE they wait in the backlog."""
        state = self._state
        if state is LinkState.LIVE:
            if self.ws.send_text(text):  # type: ignore[union-attr]
                return True
            state = self._state
            if state is LinkState.LIVE:
                self._set_state(LinkState.BACKLOGGED)
                self._wake()
        if state is LinkState.CLOSING or state is LinkState.CLOSED:
            return False
        self._backlog.push_text(text)
        return True

    # -- what the connection tells ------------------------------------------------------------

    def _conn_blocked(self) -> None:
        """on_blocked: only the connection in use can send while LIVE."""
        if self._state is LinkState.LIVE:
            self._set_state(LinkState.BACKLOGGED)
            self._wake()

    def _conn_closed(self, conn: Connection | None, code: int, reason: str) -> None:
        """on_close of a connection. Only the one in use matters: one not yet adopted is
        reported by whoever was opening it."""
        if conn is not self.ws:
            return
        self.ws = None
        self._put = None
        state = self._state
        if state is LinkState.CLOSING or state is LinkState.CLOSED:
            return
        if code not in RETRY_CODES or not self.reconnect:
            self._set_state(LinkState.CLOSED)
            self._on_gone(code, reason)  # the stream ends; it fires the disconnect event
            return
        # The state first: firing may yield, and the per-frame path must find the backlog.
        self._set_state(LinkState.RECONNECTING)
        self._wake()
        self._fire(events.DISCONNECT, events.disconnect_body(code, reason))
        log.warning("%s: connection to %s lost (%d %s); reconnecting", self.uuid, self.url,
                    code, reason)

    # -- the worker -----------------------------------------------------------------------------

    def _wake(self) -> None:
        worker = self._worker
        if worker is None or worker.dead:
            self._worker = gevent.spawn(self._work)

    def _work(self) -> None:
        """The one worker: flush while BACKLOGGED, reconnect while RECONNECTING, else end."""
        while True:
            state = self._state
            if state is LinkState.BACKLOGGED:
                self._flush()
            elif state is LinkState.RECONNECTING:
                self._reconnect()
            else:
                return

    def _flush(self) -> None:
        conn = self.ws
        assert conn is not None
        while self._state is LinkState.BACKLOGGED:
            if self._push(conn):
                self._set_state(LinkState.LIVE)
                self._report_drops()
                return
            if self._state is not LinkState.BACKLOGGED:
                return  # it died on a send
            if not conn.congested:  # refused, yet not full: it is ending, and its on_close
                gevent.sleep(_ENDING_POLL)  # is on the way (never spin without yielding)
                continue
            conn.wait_writable(_STALL_POLL)  # ends it (a drop) after WRITE_STALL_TIMEOUT
            now = monotonic()
            if now >= self._next_report:  # still stalled: say what was lost so far
                self._next_report = now + _STALL_POLL
                self._report_drops()

    def _reconnect(self) -> None:
        tries = 0
        wait = BACKOFF_FIRST
        while self._state is LinkState.RECONNECTING:
            gevent.sleep(wait * random.uniform(0.8, 1.2))
            if self._state is not LinkState.RECONNECTING:
                return
            tries += 1
            conn = self._new_connection()
            try:
                conn.connect()
                self._greet(conn)
            except WSError as exc:
                wait = min(wait * 2, BACKOFF_MAX)
                self._fire(events.ERROR, events.error_body(
                    exc.code, exc.message, retries=tries, wait_time=int(wait * 1000),
                    http_status=exc.http_status))
                self._report_drops()  # audio lost while away is reported as it goes
                if self.max_tries and tries >= self.max_tries:
                    self._set_state(LinkState.CLOSED)
                    self._on_gone(1006, f"gave up after {tries} tries: {exc.message}")
                    return
                continue
            except BaseException:  # killed by close() or abort(): the connection is not ours
                conn.abort()
                raise
            self._take(conn)  # BACKLOGGED: the worker flushes when this returns
            self.reconnects += 1
            self._fire(events.CONNECT, events.connect_body())
            log.info("%s: reconnected to %s after %d tries", self.uuid, self.url, tries)
            return

    def _report_drops(self) -> None:
        n = self._backlog.take_drops()
        if n:
            self._fire(events.ERROR, events.error_body(
                WSErrorCode.IO, f"{n} audio messages dropped (oldest first): the backlog was full",
                dropped=n))

    def _stop_worker(self, block: bool) -> None:
        worker, self._worker = self._worker, None
        if worker is not None and worker is not gevent.getcurrent() and not worker.dead:
            worker.kill(block=block)

    # -- the end --------------------------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "", text: str | None = None) -> None:
        """Everything still queued (bounded by close_timeout: a stalled endpoint must not hold
        the stop forever), then the final text, then the close handshake."""
        if self._state is LinkState.CLOSING or self._state is LinkState.CLOSED:
            return
        self._set_state(LinkState.CLOSING)
        self._stop_worker(block=True)
        conn = self.ws
        if conn is not None and conn.is_open:
            deadline = monotonic() + self._close_timeout
            while not self._push(conn) and conn.is_open:
                if not conn.congested:  # refused, yet not full: it is ending
                    break
                left = deadline - monotonic()
                if left <= 0:
                    log.warning("%s: endpoint not reading: %d bytes of audio not sent before "
                                "the close", self.uuid, self._backlog.audio_bytes)
                    break
                conn.wait_writable(left)
            if text and not conn.send_text(text) and conn.is_open:
                log.warning("%s: endpoint not reading: the final text was not sent", self.uuid)
            conn.close(code, reason)
        self._set_state(LinkState.CLOSED)
        self._backlog.clear()

    def abort(self) -> None:
        """At once: no close handshake, whatever is queued is let go."""
        if self._state is not LinkState.CLOSED:
            self._set_state(LinkState.CLOSED)
        self._stop_worker(block=False)
        if self.ws is not None:
            self.ws.abort()
        self._backlog.clear()
