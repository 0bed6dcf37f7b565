"""Prometheus metrics, pulled at scrape time: nothing on the per-frame path calls prometheus.

The per-frame path already keeps plain-int counters on each stream (`frames_in`, `frames_out`,
`dropped`, ...). A custom collector reads them when Prometheus scrapes, adds what ended streams
left behind (`Counters.add_ended`, so counters never go down when a call hangs up) and the
daemon-level counters of rare events (started, ended by reason, error and disconnect events by
code), which are plain ints bumped where those events happen. Per-frame processing time is
sampled: the stream times one frame in `SAMPLE_EVERY` with `time.perf_counter` into `FrameTimer`,
a fixed set of bucket counts.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from ..app import events

if TYPE_CHECKING:
    from ..app.daemon import Daemon
    from ..call.stream import Stream

PREFIX = "esl_audio_stream_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: One frame in this many is timed (a power of two: the stream tests `frames_in & (N - 1)`).
SAMPLE_EVERY = 64
SAMPLE_MASK = SAMPLE_EVERY - 1

#: Upper bounds of the per-frame processing-time buckets, in seconds (20 ms is a whole ptime).
FRAME_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                 0.01, 0.02)


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

    def add_ended(self, stream: Stream) -> None:
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


class DaemonCollector:
    """Reads a daemon's streams and counters when Prometheus asks, never before."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        c: Counters = d.counters
        streams = list(d.streams.values())
        yield _gauge("streams_active", "Streams in the registry (connecting, streaming or "
                     "stopping).", len(streams))
        yield _counter("streams_started", "Streams that started (the start command answered "
                       "+OK).", c.started)
        yield _labelled(CounterMetricFamily, "streams_ended", "Streams that ended, by reason.",
                        "reason", sorted(c.ended.items()))
        yield _counter("frames_in", "20 ms frames received from FreeSWITCH (unicast).",
                       c.frames_in + sum(s.frames_in for s in streams))
        yield _counter("frames_out", "Audio messages handed to the WebSocket (one per "
                       "STREAM_BUFFER_SIZE ms).", c.frames_out + sum(s.frames_out for s in streams))
        yield _counter("frames_dropped", "Audio messages dropped: the backlog was full (oldest "
                       "first) or the send was refused.",
                       c.dropped + sum(s.dropped_total for s in streams))
        yield _counter("bytes_out", "Bytes of audio (L16 payload) handed to the WebSocket.",
                       c.bytes_out + sum(s.bytes_out for s in streams))
        yield _counter("datagrams_malformed", "Unicast datagrams that were not L16 frames "
                       "(empty or of odd length).", c.malformed + sum(s.malformed for s in streams))
        yield _counter("websocket_reconnects", "WebSocket connections re-established after a "
                       "drop.", c.reconnects + sum(s.reconnects for s in streams))
        yield _labelled(CounterMetricFamily, "websocket_errors", "mod_audio_stream::error events "
                        "fired, by libwsc error code (6 connect failed, 10 timeout, ...).", "code",
                        sorted(c.errors.items()))
        yield _labelled(CounterMetricFamily, "websocket_disconnects", "mod_audio_stream::"
                        "disconnect events fired, by WebSocket close code.", "code",
                        sorted(c.disconnects.items()))
        yield _counter("events_failed", "Events FreeSWITCH did not accept (sendevent failed).",
                       d.events_failed)
        yield _gauge("esl_connected", "1 while the ESL connection to FreeSWITCH is up.",
                     1 if d.esl.connected else 0)
        yield _gauge("playback_queue_seconds", "Audio from the endpoints waiting to be played "
                     "into the calls, summed over streams.",
                     sum(s.playback_queued_seconds for s in streams))
        ft = c.frame_time
        h = HistogramMetricFamily(
            PREFIX + "frame_processing_seconds",
            f"Time to handle one frame from FreeSWITCH (mix, resample, frame, send); one frame "
            f"in {SAMPLE_EVERY} is timed.")
        h.add_metric([], ft.cumulative(), ft.sum)
        yield h


def _gauge(name: str, doc: str, value: float) -> Metric:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> Metric:
    return CounterMetricFamily(PREFIX + name, doc, value=value)


def _labelled(kind: type, name: str, doc: str, label: str,
              items: Iterable[tuple[object, int]]) -> Metric:
    family = kind(PREFIX + name, doc, labels=[label])
    for key, value in items:
        family.add_metric([str(key)], value)
    return family


def registry_for(daemon: Daemon) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one, which holds process metrics
    of whoever imported it first): the daemon's metrics and the process' own."""
    from prometheus_client import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(daemon))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format."""
    return generate_latest(registry)
