"""One datagram in: an io watcher that reads a UDP socket into a function, from the event loop.

Every source of frames (the call's own unicast, each tap, the write-back port's clock) reads the
same way, so it is written once here. The callback runs in the event loop itself (a libev io
watcher, not a greenlet): no greenlet switch and one `recv` per frame. It must never block and
never raise into the hub: a socket error or an error of the function it feeds stops the reader
and is handed to `failed` once.
"""

from __future__ import annotations

from collections.abc import Callable
from socket import socket

import gevent

_SKIP = (BlockingIOError, InterruptedError, ConnectionRefusedError)  # spurious wake-up; ICMP
_MAX_DATAGRAM = 8192


class FrameReader:
    """Reads `sock` into `take(datagram)` while started."""

    __slots__ = ("_failed", "_recv", "_take", "_watcher")

    def __init__(self, sock: socket, take: Callable[[bytes], None],
                 failed: Callable[[BaseException], None]) -> None:
        self._recv = sock.recv
        self._take = take
        self._failed = failed
        self._watcher = gevent.get_hub().loop.io(sock.fileno(), 1)
        self._watcher.start(self._ready)

    def _ready(self) -> None:
        try:
            data = self._recv(_MAX_DATAGRAM)
        except _SKIP:
            return
        except OSError as exc:
            self._fail(exc)
            return
        try:
            self._take(data)
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self._watcher.stop()
        self._failed(exc)

    def stop(self) -> None:
        self._watcher.stop()

    def start(self) -> None:
        """Read again after stop() (the native pump gives the socket back, native/pump.py)."""
        self._watcher.start(self._ready)

    def close(self) -> None:
        """Stop for good (before the socket is closed: a watcher must not outlive its fd)."""
        self._watcher.stop()
        self._watcher.close()


def drain(sock: socket) -> int:
    """Read and drop every datagram waiting in a non-blocking socket; how many there were."""
    n = 0
    try:
        while True:
            sock.recv(_MAX_DATAGRAM)
            n += 1
    except OSError:  # BlockingIOError: empty
        return n
