"""Chunking L16 audio into fixed-size pieces (e.g. STREAM_BUFFER_SIZE ms per WebSocket message).

Frames arrive as 20 ms datagrams, resampled frames, or decoded files of any length; the consumer
wants exact chunks. The common case (one frame in, one chunk out) passes the same object through
without copying; otherwise bytes gather in one bytearray read from an offset, compacted only when
the consumed part dominates, so the cost stays linear in the bytes pushed.
"""

from __future__ import annotations

import math

#: FreeSWITCH's frame: every unicast datagram, tap frame and playback slot is 20 ms.
PTIME_MS = 20


def chunk_bytes_for(rate: int, ms: int, channels: int = 1) -> int:
    """Bytes of `ms` milliseconds of L16 at `rate` Hz with `channels` interleaved channels.

    Raises ValueError when `ms` is not a whole number of samples at `rate` (use chunk_pattern,
    which alternates sizes, for such rates).
    """
    pattern = chunk_pattern(rate, ms, channels)
    if len(pattern) > 1:
        raise ValueError(f"{ms} ms is not a whole number of samples at {rate} Hz")
    return pattern[0]


def chunk_pattern(rate: int, ms: int, channels: int = 1) -> tuple[int, ...]:
    """Chunk sizes in bytes that keep `ms`-millisecond chunks exact on average at any rate.

    At 8000, 16000, 44100 or 48000 Hz, 20 ms is a whole number of samples: one size. At 11025 Hz
    it is 220.5 samples, so chunks alternate 220 and 221 samples: the k-th chunk ends at sample
    floor((k+1) * rate * ms / 1000), and the endpoint's timeline never drifts.
    """
    if rate <= 0 or ms <= 0 or channels <= 0:
        raise ValueError(f"bad chunk parameters rate={rate} ms={ms} channels={channels}")
    total = rate * ms
    cycle = 1000 // math.gcd(total, 1000)
    return tuple(
        ((k + 1) * total // 1000 - k * total // 1000) * 2 * channels for k in range(cycle)
    )


class Chunker:
    """Turns a stream of L16 bytes of varying lengths into exact chunks of `chunk_bytes`.

    Single-consumer and not thread-safe. A chunk handed back by the fast path is the very object
    pushed: callers must not mutate a buffer after pushing it.
    """

    __slots__ = ("_buf", "_direct", "_next", "_off", "_pattern", "chunk_bytes", "empty",
                 "whole")

    _COMPACT_MIN = 64 * 1024  # below this, resetting on empty is enough; no need to move bytes

    def __init__(self, chunk_bytes: int | tuple[int, ...]) -> None:
        pattern = (chunk_bytes,) if isinstance(chunk_bytes, int) else tuple(chunk_bytes)
        if not pattern or min(pattern) <= 0:
            raise ValueError(f"chunk sizes must be positive, not {chunk_bytes}")
        #: size of the next chunk; with a pattern (see chunk_pattern) it cycles after each pop
        self.chunk_bytes = pattern[0]
        self._pattern = pattern if len(pattern) > 1 else None
        self._next = 0
        self._buf = bytearray()
        self._off = 0
        self._direct: bytes | None = None  # a whole chunk pushed while nothing else was pending
        #: Nothing pending (kept up to date by push/pop/clear), and the one chunk size when
        #: there is a single one (else -1): while `empty`, data of exactly `whole` bytes would
        #: come out as it went in, so the caller may skip push + pop (the per-frame fast path).
        self.empty = True
        self.whole = pattern[0] if len(pattern) == 1 else -1

    @property
    def pending(self) -> int:
        """Bytes held (complete chunks not yet popped plus the partial tail)."""
        direct = self._direct
        return len(self._buf) - self._off + (len(direct) if direct is not None else 0)

    def push(self, data: bytes) -> None:
        """Append audio; any length, including zero."""
        n = len(data)
        if not n:
            return
        self.empty = False
        direct = self._direct
        if direct is None and n == self.chunk_bytes and self._off == len(self._buf):
            self._direct = data  # fast path: no copy
            return
        if direct is not None:  # keep order: the held chunk goes in front of the new data
            self._direct = None
            self._buf += direct
        self._buf += data

    def pop(self) -> bytes | None:
        """Next full chunk, or None when less than a chunk is pending."""
        chunk = self._pop()
        if chunk is not None and self._pattern is not None:
            self._next = (self._next + 1) % len(self._pattern)
            self.chunk_bytes = self._pattern[self._next]
        self.empty = self._direct is None and self._off == len(self._buf)
        return chunk

    def _pop(self) -> bytes | None:
        direct = self._direct
        if direct is not None:
            self._direct = None
            return direct
        buf = self._buf
        off = self._off
        end = off + self.chunk_bytes
        size = len(buf)
        if end > size:
            return None
        with memoryview(buf) as view:
            chunk = bytes(view[off:end])
        if end == size:
            buf.clear()
            self._off = 0
        elif end >= self._COMPACT_MIN and end * 2 >= size:
            del buf[:end]  # amortised: only once the consumed part outweighs what is left
            self._off = 0
        else:
            self._off = end
        return chunk

    def take(self) -> bytes:
        """Everything pending, the chunker left empty (handed to another chunker: the native
        pump's, native/pump.py)."""
        direct = self._direct
        with memoryview(self._buf) as view:
            pending = bytes(view[self._off:])
        if direct is not None:
            pending = direct + pending if pending else direct
        self.clear()
        return pending

    def clear(self) -> None:
        """Drop everything pending (e.g. on pause or a `clear` command)."""
        self._buf.clear()
        self._off = 0
        self._direct = None
        self.empty = True
