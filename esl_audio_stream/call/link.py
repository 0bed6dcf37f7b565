"""One stream's WebSocket over time: reconnection that loses no audio, and backpressure.

A `WebSocketClient` is one connection; a `Link` is what the stream talks to for the whole call.
The per-frame path calls `link.send(chunk)`, a bound method swapped between two states, so the
common case costs one attribute read and one call:

- live: straight into the connection (`_send_live`). When the kernel will not take more (the
  endpoint or the network is slow), the chunk and the ones after it go to the backlog instead;
- backlog: chunks queue in order, bounded in bytes (`backlog_bytes`, 10 s of audio by default);
  beyond the bound the OLDEST audio is dropped and counted. A flusher greenlet moves the backlog
  into the connection as it drains, then switches back to live.

A dropped connection (no close frame, or a close code that means "try again": RETRY_CODES)
fires `mod_audio_stream::disconnect` and is retried with capped exponential backoff
and jitter; each failed try fires `mod_audio_stream::error` with `retries`, `wait_time` (ms)
and `http_status` where the endpoint answered HTTP. Meanwhile audio fills the backlog. On
reconnection the metadata goes first, then the backlog in order, then live audio, and
`mod_audio_stream::connect` fires again; audio dropped on the way is reported in an error event.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from time import monotonic
from typing import TYPE_CHECKING

import gevent

from ..app import events
from ..ws.client import WebSocketClient, WSError

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


class Link:
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
        backlog_bytes: int,
        headers: Sequence[tuple[str, str]] = (),
        deflate: bool = True,
        heartbeat: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 5.0,
        close_timeout: float = 2.0,
        max_tries: int = 0,
    ) -> None:
        self.url = url
        self.uuid = uuid
        self._fire = fire
        self._on_text = on_text
        self._on_binary = on_binary
        self._on_gone = on_gone
        self.metadata = metadata
        self.reconnect = reconnect
        self.backlog_bytes = backlog_bytes
        self.max_tries = max_tries
        self._client_args = {
            "headers": headers,
            "deflate": deflate,
            "heartbeat": heartbeat,
            "ssl_context": ssl_context,
            "connect_timeout": connect_timeout,
            "close_timeout": close_timeout,
        }
        self.ws: WebSocketClient | None = None
        self.send: Callable[[bytes], bool] = self._to_backlog
        self._backlog: deque[bytes | str] = deque()  # str = a text message, never dropped
        self._backlog_audio = 0  # bytes of audio in the backlog
        self.dropped_frames = 0  # audio chunks dropped (oldest first) since the last report
        self.dropped_total = 0
        self.reconnects = 0
        self._closing = False
        self._worker: gevent.Greenlet | None = None  # reconnector or flusher, one at a time

    # -- connecting ---------------------------------------------------------------------------

    def _client(self) -> WebSocketClient:
        return WebSocketClient(self.url, on_text=self._on_text, on_binary=self._on_binary,
                               on_close=self._closed, **self._client_args)

    def connect(self) -> None:
        """The first connection: no retry here (the start command answers); raises WSError."""
        ws = self._client()
        ws.connect()
        self.ws = ws
        if self.metadata:
            ws.send_text(self.metadata)
        self._flush_now(ws)

    def _flush_now(self, ws: WebSocketClient) -> bool:
        """Move the backlog into `ws` without yielding (so no frame can overtake it); True when
        it is empty and the live path is back."""
        backlog = self._backlog
        while backlog and not ws.congested:
            item = backlog.popleft()
            if isinstance(item, str):
                ws.send_text(item)
            else:
                self._backlog_audio -= len(item)
                ws.send_binary(item)
        if backlog:
            return False
        self.send = self._send_live
        self._report_drops()
        return True

    # -- the per-frame path -------------------------------------------------------------------

    def _send_live(self, chunk: bytes) -> bool:
        ws = self.ws
        if not ws.congested:  # type: ignore[union-attr]
            if ws.send_binary(chunk):  # type: ignore[union-attr]
                return True
            # Refused: the connection died, possibly on this very send (its on_close has
            # switched us to the backlog by now). The chunk waits for the next connection.
            return self._to_backlog(chunk)
        self.send = self._to_backlog  # the peer is slow: queue, bounded, and drain it later
        self._to_backlog(chunk)
        self._start_worker(self._flush)
        return True

    def _to_backlog(self, chunk: bytes) -> bool:
        self._backlog.append(chunk)
        self._backlog_audio += len(chunk)
        if self._backlog_audio > self.backlog_bytes:
            self._drop_oldest()
        return True

    def _drop_oldest(self) -> None:
        backlog = self._backlog
        keep_texts = []
        while self._backlog_audio > self.backlog_bytes and backlog:
            item = backlog.popleft()
            if isinstance(item, str):
                keep_texts.append(item)
                continue
            self._backlog_audio -= len(item)
            self.dropped_frames += 1
            self.dropped_total += 1
        backlog.extendleft(reversed(keep_texts))

    def send_text(self, text: str) -> bool:
        """Texts keep their order with the audio; while disconnected they wait in the backlog."""
        if self.send == self._send_live and self.ws is not None and self.ws.is_open:
            return self.ws.send_text(text)
        self._backlog.append(text)
        return True

    # -- backpressure ---------------------------------------------------------------------------

    def _flush(self) -> None:
        while not self._closing:
            ws = self.ws
            if ws is None or not ws.is_open:
                return  # the reconnector takes over
            ws.drained.wait(1.0)
            if self._flush_now(ws):
                return
            self._report_drops()  # still stalled: say what was lost so far, once a second

    # -- reconnection ---------------------------------------------------------------------------

    def _closed(self, code: int, reason: str) -> None:
        """on_close of the current connection (from its own greenlets)."""
        if self._closing:
            return
        self.send = self._to_backlog
        self.ws = None
        if code not in RETRY_CODES or not self.reconnect:
            self._on_gone(code, reason)  # the stream ends; it fires the disconnect event
            return
        self._fire(events.DISCONNECT, events.disconnect_body(code, reason))
        log.warning("%s: connection to %s lost (%d %s); reconnecting", self.uuid, self.url,
                    code, reason)
        self._start_worker(self._reconnect)

    def _start_worker(self, fn: Callable[[], None]) -> None:
        worker = self._worker
        if worker is not None and not worker.dead:
            if fn != self._reconnect:
                return  # already flushing (or reconnecting, which flushes at the end)
            if worker is not gevent.getcurrent():
                worker.kill(block=False)  # a flusher has nothing to flush into any more
        self._worker = gevent.spawn(fn)

    def _reconnect(self) -> None:
        tries = 0
        wait = BACKOFF_FIRST
        while not self._closing:
            gevent.sleep(wait * random.uniform(0.8, 1.2))
            tries += 1
            ws = self._client()
            try:
                ws.connect()
            except WSError as exc:
                wait = min(wait * 2, BACKOFF_MAX)
                self._fire(events.ERROR, events.error_body(
                    exc.code, exc.message, retries=tries, wait_time=int(wait * 1000),
                    http_status=exc.http_status))
                self._report_drops()  # audio lost while away is reported as it goes
                if self.max_tries and tries >= self.max_tries:
                    self._on_gone(1006, f"gave up after {tries} tries: {exc.message}")
                    return
                continue
            if self._closing:
                ws.close(1000, "")
                return
            self.ws = ws
            self.reconnects += 1
            if self.metadata:
                ws.send_text(self.metadata)
            self._fire(events.CONNECT, events.connect_body())
            log.info("%s: reconnected to %s after %d tries", self.uuid, self.url, tries)
            if not self._flush_now(ws):
                self._flush()
            return

    def _report_drops(self) -> None:
        if self.dropped_frames:
            n, self.dropped_frames = self.dropped_frames, 0
            self._fire(events.ERROR, events.error_body(
                events.WS_IO, f"{n} audio messages dropped (oldest first): the backlog was full",
                dropped=n))

    # -- the end --------------------------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "", text: str | None = None) -> None:
        """Final text (after whatever audio can still go), close handshake, workers ended."""
        self._closing = True
        worker = self._worker
        if worker is not None and worker is not gevent.getcurrent():
            worker.kill()
        ws = self.ws
        if ws is not None and ws.is_open:
            # Everything still waiting goes before the close, the endpoint keeping up or not,
            # for at most close_timeout (a stalled endpoint must not hold the stop forever).
            deadline = monotonic() + self._client_args["close_timeout"]
            while not self._flush_now(ws) and ws.is_open:
                left = deadline - monotonic()
                if left <= 0 or not ws.drained.wait(left):
                    log.warning("%s: endpoint not reading: %d bytes of audio not sent before "
                                "the close", self.uuid, self._backlog_audio)
                    break
            if text:
                ws.send_text(text)
            ws.close(code, reason)

    def abort(self) -> None:
        self._closing = True
        worker = self._worker
        if worker is not None and worker is not gevent.getcurrent():
            worker.kill(block=False)
        if self.ws is not None:
            self.ws.abort()
        self._backlog.clear()
        self._backlog_audio = 0

    @property
    def is_open(self) -> bool:
        return self.ws is not None and self.ws.is_open
