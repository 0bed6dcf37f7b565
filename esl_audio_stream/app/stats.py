"""The daemon's counters, as plain ints: what the per-frame path and rare events bump.

Kept apart from ops/metrics.py (the Prometheus collector that reads them at scrape time) so that
call/stream.py, the per-frame module, imports nothing of ops/ and nothing of prometheus_client.
Per-frame processing time is sampled: the stream times one frame in `SAMPLE_EVERY` with
`time.perf_counter` into `FrameTimer`, a fixed set of bucket counts.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections import Counter
from typing import Protocol

from . import events

#: One frame in this many is timed (a power of two: the stream tests `frames_in & SAMPLE_MASK`).
SAMPLE_EVERY = 64
SAMPLE_MASK = SAMPLE_EVERY - 1

#: Upper bounds of the per-frame processing-time buckets, in seconds (20 ms is a whole ptime).
FRAME_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                 0.01, 0.02)

#: Upper bounds of the datagram -> WebSocket frame latency buckets, in seconds: fine up to the
#: 5 ms a frame may take at the worst instant (every call's frame at once), coarse beyond.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005,
                   0.0075, 0.01, 0.02, 0.05, 0.1)


class FrameTimer:
    """A histogram with fixed buckets and plain-int counts: `observe` allocates nothing but the
    float it is handed (bisect on a tuple, one list slot incremented)."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = FRAME_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus' buckets: (upper bound as text, count of observations <= it)."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out


class EndedStream(Protocol):
    """What `Counters.add_ended` reads of a stream that has left the registry (a Protocol, so
    this module needs nothing of call/)."""

    @property
    def cause(self) -> str: ...
    @property
    def frames_in(self) -> int: ...
    @property
    def frames_out(self) -> int: ...
    @property
    def dropped_total(self) -> int: ...
    @property
    def bytes_out(self) -> int: ...
    @property
    def reconnects(self) -> int: ...
    @property
    def malformed(self) -> int: ...


class Counters:
    """The daemon's own counters: rare events, and what ended streams had counted."""

    def __init__(self) -> None:
        self.started = 0
        self.ended: Counter[str] = Counter()  # by cause: command, hangup, endpoint-closed, ...
        self.errors: Counter[int] = Counter()  # mod_audio_stream::error events, by code
        self.disconnects: Counter[int] = Counter()  # mod_audio_stream::disconnect, by close code
        # Sums over the streams that have ended (the live ones are read at scrape time).
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = 0
        self.bytes_out = 0
        self.reconnects = 0
        self.malformed = 0
        self.frame_time = FrameTimer()
        #: A timed unicast frame: the kernel's arrival stamp to its WebSocket frame sent.
        self.frame_latency = FrameTimer(LATENCY_BUCKETS)

    def add_ended(self, stream: EndedStream) -> None:
        """A stream has left the registry: keep its counts, so the totals never go down."""
        self.ended[stream.cause or "unknown"] += 1
        self.frames_in += stream.frames_in
        self.frames_out += stream.frames_out
        self.dropped += stream.dropped_total
        self.bytes_out += stream.bytes_out
        self.reconnects += stream.reconnects
        self.malformed += stream.malformed

    def count_event(self, subclass: str, body: str) -> None:
        """Count an error or disconnect event by the code its body carries."""
        if subclass == events.ERROR:
            into = self.errors
        elif subclass == events.DISCONNECT:
            into = self.disconnects
        else:
            return
        try:
            code = int(json.loads(body)["message"]["code"])
        except (ValueError, KeyError, TypeError):
            code = 0
        into[code] += 1
