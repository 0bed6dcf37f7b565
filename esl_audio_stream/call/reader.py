"""Frames in: an io watcher that reads a UDP socket (one datagram a frame) or a FIFO (a byte
stream, cut into frames) into a function, from the event loop.

Every source of frames (the call's own unicast, each tap, the write-back port's clock, a
recording's FIFO) reads the same way, so it is written once here. The callback runs in the event
loop itself (a libev io watcher, not a greenlet): no greenlet switch and one `recv`/`read` per
wake-up. It must never block and never raise into the hub: a read error or an error of the
function it feeds stops the reader and is handed to `failed` once.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable
from fcntl import ioctl
from socket import SOL_SOCKET, socket
from typing import Protocol

import gevent

from ..media.frames import Chunker

_SKIP = (BlockingIOError, InterruptedError, ConnectionRefusedError)  # spurious wake-up; ICMP
_MAX_DATAGRAM = 8192
_SIOCGSTAMP = 0x8906  # Linux: when the last datagram read from a socket reached the host
_TIMEVAL = struct.Struct("@ll")
_TIMEVAL_ZERO = bytes(_TIMEVAL.size)
_SO_MEMINFO = 55  # Linux 4.6: the socket's memory counters, the 9th its drops
_MEMINFO = struct.Struct("9I")
_feeding: list[FrameReader | None] = [None]  # whose datagram is being fed now (one at a time)


def arrival() -> float | None:
    """When the datagram being fed now reached the host (the kernel's stamp, wall-clock
    seconds like the event loop's `now`), or None outside a FrameReader's callback.

    The time the loop reads a datagram is not when it came: a loop that stalled reads a
    queue of them at once, and the frame clock (media/mix.py) would take that delay for
    frames lost and fill silence that never was. It asks this only for a frame that looks
    late, so a steady stream never pays for the system call."""
    reader = _feeding[0]
    if reader is None:
        return None
    try:
        sec, usec = _TIMEVAL.unpack(ioctl(reader._fd, _SIOCGSTAMP, _TIMEVAL_ZERO))
    except OSError:
        return None
    return sec + usec * 1e-6


def dropped() -> int | None:
    """How many datagrams the kernel has dropped for the socket being fed now since it was
    made (its receive buffer was full: our loop fell that far behind), or None outside a
    FrameReader's callback. On the same host that is the only way a unicast frame is lost,
    so the frame clock fills exactly these (asked only for a frame that came late)."""
    reader = _feeding[0]
    if reader is None:
        return None
    try:
        return _MEMINFO.unpack(reader._sock.getsockopt(SOL_SOCKET, _SO_MEMINFO,
                                                       _MEMINFO.size))[8]
    except (OSError, struct.error):
        return None


def _stamp_arrivals(fd: int) -> None:
    """Ask for the first stamp now: the kernel starts stamping this socket's datagrams then
    (the answer itself, ENOENT before any datagram, does not matter). On a host where no socket
    asked before, stamping starts a moment later (Linux switches it on by deferred work): a
    datagram in between has no stamp, and asking says when it was read, as before stamps."""
    with contextlib.suppress(OSError):
        ioctl(fd, _SIOCGSTAMP, _TIMEVAL_ZERO)


class FrameReader:
    """Reads `sock` into `take(datagram)` while started."""

    __slots__ = ("_failed", "_fd", "_recv", "_sock", "_take", "_watcher")

    def __init__(self, sock: socket, take: Callable[[bytes], None],
                 failed: Callable[[BaseException], None]) -> None:
        self._sock = sock
        self._recv = sock.recv
        self._take = take
        self._failed = failed
        self._fd = fd = sock.fileno()
        _stamp_arrivals(fd)
        self._watcher = gevent.get_hub().loop.io(fd, 1)
        self._watcher.start(self._ready)

    def _ready(self) -> None:
        try:
            data = self._recv(_MAX_DATAGRAM)
        except _SKIP:
            return
        except OSError as exc:
            self._fail(exc)
            return
        feeding = _feeding
        feeding[0] = self
        try:
            self._take(data)
        except Exception as exc:
            self._fail(exc)
        feeding[0] = None

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


_read = os.read


class Native(Protocol):
    """A native pump that may read a FifoReader's FIFO (native/pump.py), as the reader sees it."""

    def let_go(self, reader: FifoReader) -> None: ...


def _discard(frame: bytes) -> None:
    pass


class FifoReader:
    """Reads a FIFO into `take(frame)`, cut into frames of `frames` bytes (a size, or the
    cycle chunk_pattern gives) whatever sizes the reads return: a FIFO is a byte stream, and
    FreeSWITCH writes it in bursts at the start (and in any size a full pipe lets through).
    At most `max_frames` frames are read per wake-up, so one reader with a backlog never holds
    the event loop (the watcher is level-triggered: what is left wakes it again on the next
    loop, after the other readers). EOF -- the writer closed it -- stops the reader and calls
    `on_eof` once (from the event loop: it must not block).

    A native pump (native/pump.py, `native`) may read the FIFO instead for a while: the reader
    pauses, hands it the bytes of a frame not yet whole (`take_pending`) and gets back what
    the pump read and did not feed (`give_back`, which also counts what it read into
    `bytes_in`), so no byte is lost or read twice; EOF or a read error the pump met end the
    reader as its own would (`ended`, `fail`)."""

    __slots__ = ("_chunker", "_failed", "_fd", "_max", "_on_eof", "_take", "_watcher",
                 "bytes_in", "eof", "native", "stopped")

    def __init__(self, fd: int, frames: int | tuple[int, ...], take: Callable[[bytes], None],
                 failed: Callable[[BaseException], None], on_eof: Callable[[], None],
                 max_frames: int = 8) -> None:
        self._fd = fd
        self._chunker = Chunker(frames)
        self._max = max(frames if isinstance(frames, int) else max(frames), 1) * max_frames
        self._take = take
        self._failed = failed
        self._on_eof = on_eof
        self.bytes_in = 0
        self.eof = False
        self.stopped = False  # stopped or closed: nobody reads it (the pump does not either)
        #: A native pump that may read the FIFO instead (native/pump.py); it lets go first
        #: whenever this reader must change (discard, stop, close).
        self.native: Native | None = None
        self._watcher = gevent.get_hub().loop.io(fd, 1)
        self._watcher.start(self._ready)

    def _ready(self) -> None:
        try:
            data = _read(self._fd, self._max)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.fail(exc)
            return
        if not data:
            self.ended()
            return
        self.bytes_in += len(data)
        chunker = self._chunker
        if chunker.empty and len(data) == chunker.whole:  # one write, one frame
            try:
                self._take(data)
            except Exception as exc:
                self.fail(exc)
            return
        chunker.push(data)
        self.flush()

    # -- a native pump reads instead (native/pump.py) -----------------------------------------

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def frame_bytes(self) -> int:
        """The one frame size (-1: sizes in a cycle, which the pump does not cut)."""
        return self._chunker.whole

    @property
    def max_bytes(self) -> int:
        """Bytes read per wake-up at most (the pump reads as much)."""
        return self._max

    def pause(self) -> None:
        self._watcher.stop()

    def resume(self) -> None:
        if not self.stopped:
            self._watcher.start(self._ready)

    def take_pending(self) -> bytes:
        """The bytes read and not yet a whole frame, handed to the pump (none left here)."""
        return self._chunker.take()

    def give_back(self, pending: bytes, bytes_read: int) -> None:
        """What the pump read (`bytes_read`, counted in) and did not feed: `pending` comes
        first, before the next read."""
        self.bytes_in += bytes_read
        self._chunker.push(pending)

    def flush(self) -> None:
        """Feed the whole frames the chunker holds: a read's, or those given back (a pump
        stopped in the middle of a read)."""
        chunker, take = self._chunker, self._take
        try:
            while (frame := chunker.pop()) is not None:
                take(frame)
        except Exception as exc:
            self.fail(exc)

    def ended(self) -> None:
        """EOF (read here, or by the pump)."""
        self._watcher.stop()
        self.stopped = self.eof = True
        self._on_eof()

    def fail(self, exc: BaseException) -> None:
        """A read (here, or the pump's) or `take` failed: the reader stops, `failed` is told."""
        self._watcher.stop()
        self.stopped = True
        self._failed(exc)

    def _let_native_go(self) -> None:
        native, self.native = self.native, None
        if native is not None:
            native.let_go(self)

    # -- the reader's own ends ------------------------------------------------------------------

    def discard(self) -> None:
        """Read on, feeding nothing: a writer whose reader stopped reading would block once
        the pipe is full, and FreeSWITCH's recording thread would then hold up the stop."""
        self._take = _discard
        self._let_native_go()  # the pump hands back and this reader reads on

    def stop(self) -> None:
        self._watcher.stop()
        self.stopped = True
        self._let_native_go()

    def close(self) -> None:
        """Stop for good (before the fd is closed: a watcher must not outlive its fd)."""
        self.stopped = True
        self._let_native_go()
        self._watcher.stop()
        self._watcher.close()
