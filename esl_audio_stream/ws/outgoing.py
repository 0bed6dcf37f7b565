"""What one open WebSocket connection sends: frames handed to a non-blocking socket at once, and
at most the rest of one of them kept.

Why: sending is on the per-frame path (50 messages/s per call), so `send_binary` builds the frame
(ws/framing.py), tries one non-blocking `send` and returns: no greenlet switch, no queue of
messages. What the kernel does not take of a frame is kept, and so are the control frames
(pong, ping, close) that come after it; while any of it waits (`congested`) data messages are
refused. So a message is either the connection's (sent, or its rest kept) or still its owner's,
whose one queue (call/backlog.py) decides order and what is dropped. Nothing here waits unless
the owner asks (`wait_writable`, always bounded); `on_blocked` tells it when waiting begins.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from time import monotonic
from typing import Any

import gevent
import gevent.event
from gevent import socket as gsocket

from .errors import WSError, WSErrorCode
from .framing import FIN, OP_BINARY, OP_TEXT, FrameWriter

WRITE_STALL_TIMEOUT = 30.0  # no byte accepted by the kernel for this long: the peer is gone
#: Bytes of control frames we still queue behind a congested frame: pongs beyond it are skipped
#: (RFC 6455 5.5.3 lets us answer only the latest ping), so a peer pinging a stalled connection
#: cannot grow our buffer.
CONTROL_ROOM = 16 * 1024
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError)
_BINARY = FIN | OP_BINARY
_TEXT = FIN | OP_TEXT


class Outgoing:
    """The sending side of one open connection; `close()` ends it (the connection's _finish)."""

    __slots__ = ("_closed", "_compress_binary", "_fd", "_frame", "_io", "_native", "_on_blocked",
                 "_on_error", "_pending", "_progress", "_send", "_writable", "last_out")

    def __init__(self, sock: gsocket.socket, *, secure: bool, frames: FrameWriter,
                 compress_binary: bool, on_blocked: Callable[[], None] | None,
                 on_error: Callable[[WSError], None]) -> None:
        # Plain TCP: straight to the kernel socket under gevent's wrapper (whose only job,
        # waiting, never happens on a non-blocking socket); TLS needs the wrapper.
        raw = getattr(sock, "_sock", None)
        self._send: Callable[[Any], int] = raw.send if raw is not None and not secure \
            else sock.send
        self._fd = sock.fileno()
        #: What a native pump needs to send binary messages itself (plain TCP, uncompressed).
        self._native = (self._fd, frames) if raw is not None and not secure \
            and not compress_binary else None
        #: Write readiness, made on the first wait (most connections never wait); None again
        #: once closed.
        self._io: Any = None
        self._writable: gevent.event.Event | None = None
        self._closed = False
        self._frame = frames.frame
        self._compress_binary = compress_binary
        self._on_blocked = on_blocked
        self._on_error = on_error
        self._pending = bytearray()  # the rest of a partly sent frame, then control frames
        self._progress = 0.0  # when the kernel last took pending bytes (or they began to wait)
        self.last_out = monotonic()  # when the last data message went (for the heartbeat)

    @property
    def congested(self) -> bool:
        return bool(self._pending)

    @property
    def buffered(self) -> int:
        return len(self._pending)

    def send_binary(self, data: bytes | bytearray | memoryview) -> bool:
        """One binary message. True: it is the connection's (handed to the kernel, or the rest
        of it kept); False: congested or failed (the connection ends): the caller still has it."""
        if self._pending:
            return False
        return self._put(self._frame(_BINARY, data, self._compress_binary), True)

    def native_target(self) -> tuple[int, FrameWriter] | None:
        """(the socket's fd, the frame writer) when another sender may put binary messages on
        this connection itself -- the native pump (native/pump.py), while nothing waits here --:
        plain TCP, binary messages not compressed. None otherwise (TLS, deflated audio)."""
        return None if self._closed else self._native

    def keep(self, rest: bytes) -> None:
        """The rest of a data frame the native pump handed the kernel in part: kept, as `_put`
        keeps ours."""
        self._congest(memoryview(rest))

    def fail(self, exc: OSError) -> None:
        """The native pump's send failed: the connection ends as it does when ours fails."""
        self._failed(exc)

    def send_text(self, text: str) -> bool:
        """One text message (compressed where negotiated); True/False as for send_binary."""
        if self._pending:
            return False
        return self._put(self._frame(_TEXT, text.encode(), True), True)

    def send_text_utf8(self, data: bytes | bytearray | memoryview) -> bool:
        """One text message already encoded as UTF-8: audio carried in text (Twilio Media
        Streams' JSON), so compressed as binary audio is (not by default)."""
        if self._pending:
            return False
        return self._put(self._frame(_TEXT, data, self._compress_binary), True)

    def send_control(self, wire: bytes, droppable: bool = False) -> None:
        """A control frame is never refused: behind what waits, or sent now (a droppable one,
        a pong, is skipped when CONTROL_ROOM is used up)."""
        if self._pending:
            if not droppable or len(self._pending) < CONTROL_ROOM:
                self._pending += wire
            return
        self._put(memoryview(wire), False)

    def _put(self, wire: memoryview, data: bool) -> bool:
        if data:
            self.last_out = monotonic()
        try:
            sent = self._send(wire)  # non-blocking socket: never waits, never switches
        except _WOULD_BLOCK:
            sent = 0
        except OSError as exc:
            self._failed(exc)
            return False
        if sent != len(wire):
            self._congest(wire[sent:])
        return True

    def _congest(self, rest: memoryview) -> None:
        """Keep what the kernel did not take; tell the owner that waiting begins."""
        self._pending += rest
        self._progress = monotonic()
        if self._on_blocked is not None:
            self._on_blocked()

    def _failed(self, exc: OSError) -> None:
        self._on_error(WSError(WSErrorCode.IO, f"send failed: {exc}"))

    def flush(self) -> bool:
        """Hand waiting bytes to the kernel without waiting; True when none wait any more."""
        pending = self._pending
        if not pending:
            return True
        try:
            sent = self._send(pending)
        except _WOULD_BLOCK:
            return False
        except OSError as exc:
            self._failed(exc)
            return False
        if sent:
            del pending[:sent]
            self._progress = monotonic()
        return not pending

    def wait_writable(self, timeout: float) -> bool:
        """Wait at most `timeout` for the kernel to take more; True when it will. A peer that
        took no byte for WRITE_STALL_TIMEOUT is gone: the connection ends (TIMEOUT), False."""
        if self._closed:
            return False
        if not self._pending:
            return True
        io, writable = self._io, self._writable
        if io is None or writable is None:  # (made together)
            io = self._io = gevent.get_hub().loop.io(self._fd, 2)
            writable = self._writable = gevent.event.Event()
        stall_end = self._progress + WRITE_STALL_TIMEOUT
        left = stall_end - monotonic()
        ready = False
        if left > 0:
            writable.clear()
            io.start(writable.set)
            try:
                ready = writable.wait(min(timeout, left))
            finally:
                if self._io is io:  # else close() has ended it
                    io.stop()
        if self._closed:
            return False
        if not ready and monotonic() >= stall_end:
            msg = f"peer accepted no data for {WRITE_STALL_TIMEOUT:g} s"
            self._on_error(WSError(WSErrorCode.TIMEOUT, msg))
            return False
        return ready

    def drain(self, deadline: float) -> None:
        """Everything waiting to the kernel, waiting at most until `deadline` (closing)."""
        while not self.flush() and not self._closed:
            left = deadline - monotonic()
            if left <= 0:
                return
            self.wait_writable(left)

    def close(self) -> None:
        """The connection ended: before its socket closes, the watcher goes (no wait may outlive
        the fd) and an owner waiting to write wakes; what waited is let go."""
        self._closed = True
        io, self._io = self._io, None
        if io is not None:
            io.stop()
            io.close()
        if self._writable is not None:
            self._writable.set()
        self._pending = bytearray()
