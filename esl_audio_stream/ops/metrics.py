"""Prometheus metrics, pulled at scrape time: nothing on the per-frame path calls prometheus.

The per-frame path keeps plain-int counters on each stream (`frames_in`, `frames_out`, ...) and
in app/stats.py (`Counters`, `FrameTimer`), which imports no Prometheus. A custom collector reads
them when Prometheus scrapes: the live streams, what ended streams left behind
(`Counters.add_ended`, so counters never go down when a call hangs up) and the daemon-level
counters of rare events (started, ended by reason, error and disconnect events by code). It reads
them through `Observed`, a small interface the daemon meets; it never imports the daemon.

With workers (`run --workers N`), the supervisor's /metrics is `merge` of theirs: each series
labelled `worker="<i>"`, not summed -- a worker replaced starts its counters from 0, which
Prometheus reads as that one series' reset (a sum would fall, and read as the whole daemon's);
`sum without (worker) (rate(...))` is the daemon's.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

import gevent
from greenlet import greenlet as RawGreenlet
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from ..app.stats import SAMPLE_EVERY, Counters

if TYPE_CHECKING:
    from ..app.registry import Streams

PREFIX = "esl_audio_stream_"

#: Heap objects the greenlet count looks at before it yields (~0.5 ms of the event loop).
GREENLET_WALK_SLICE = 5000


def count_greenlets() -> int:
    """Greenlets alive, counted by walking the heap (a leak shows here first), a slice at a
    time: the walk costs ~0.1 us an object (30 ms at 300 000), which in one go would hold every
    call's frames that long at each scrape. Yields between slices: a greenlet's call (the
    scrape's), never the hub's."""
    objs = gc.get_objects()
    n = 0
    for at in range(0, len(objs), GREENLET_WALK_SLICE):
        # type(), not isinstance(): the heap holds weakref proxies, and asking a dead one for
        # its class raises ReferenceError
        n += sum(1 for o in objs[at:at + GREENLET_WALK_SLICE]
                 if issubclass(type(o), RawGreenlet) and not o.dead)
        gevent.sleep(0)
    return n
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Observed(Protocol):
    """What the collector (and the status feed) read of the daemon."""

    @property
    def streams(self) -> Streams: ...
    @property
    def counters(self) -> Counters: ...
    @property
    def events_failed(self) -> int: ...
    @property
    def esl_connected(self) -> bool: ...
    def resources(self) -> Mapping[str, float]:
        """What the daemon holds and what it carried over restarts (see Daemon.resources)."""
        ...


#: Daemon.resources() keys: (kind, help). Gauges are what is held now; counters only grow.
RESOURCES = {
    "ports_in_use": ("gauge", "FreeSWITCH-side unicast ports the daemon holds."),
    "ports_held": ("gauge", "Ports held back: someone (maybe FreeSWITCH) still has them bound."),
    "greenlets": ("gauge", "Greenlets alive in the daemon process (a leak shows here first)."),
    "streams_carried_on": ("counter", "Streams a previous daemon process left, carried on."),
    "streams_orphaned": ("counter", "Streams left without a daemon longer than orphan_timeout: "
                                    "ended, not carried on."),
    "streams_forgotten": ("counter", "Streams whose calls ended while no daemon ran."),
    "records_written": ("counter", "Stream records written on their calls (crash-only)."),
    "esl_events": ("counter", "Events this worker's ESL connection brought (workers only)."),
    "esl_events_foreign": ("counter", "Of them, events about another worker's calls: 0 while "
                                      "FreeSWITCH applies the worker's filters."),
}


class DaemonCollector:
    """Reads a daemon's streams and counters when Prometheus asks, never before."""

    def __init__(self, daemon: Observed) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        c: Counters = d.counters
        streams = d.streams.all()
        for name, value in d.resources().items():
            kind, doc = RESOURCES[name]
            yield (_gauge if kind == "gauge" else _counter)(name, doc, value)
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
                     1 if d.esl_connected else 0)
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
        fl = c.frame_latency
        h = HistogramMetricFamily(
            PREFIX + "frame_latency_seconds",
            f"From a datagram from FreeSWITCH reaching the host (the kernel's stamp) to its "
            f"WebSocket frame handed to the kernel: what the daemon adds, waiting for its turn "
            f"included; UDP sources only (unicast, taps), one frame in {SAMPLE_EVERY}.")
        h.add_metric([], fl.cumulative(), fl.sum)
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


def registry_for(daemon: Observed) -> CollectorRegistry:
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


class _Fixed:
    """A collector of families made already (the workers', merged)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def merge(texts: Mapping[int, str], restarts: Mapping[int, int],
          up: Mapping[int, bool]) -> bytes:
    """The workers' texts (by worker) as one, each series labelled with its worker, and the
    supervisor's own series (see the module docstring)."""
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    for worker, text in sorted(texts.items()):
        for family in text_string_to_metric_families(text):
            into = families.get(family.name)
            if into is None:
                into = families[family.name] = Metric(family.name, family.documentation,
                                                      family.type, family.unit)
            label = str(worker)
            into.samples.extend(sample._replace(labels={**sample.labels, "worker": label})
                                for sample in family.samples)
    mine = [_labelled(GaugeMetricFamily, "worker_up", "1 while the worker process runs.",
                      "worker", sorted((i, int(v)) for i, v in up.items())),
            _labelled(CounterMetricFamily, "worker_restarts", "Worker processes that died and "
                      "were replaced.", "worker", sorted(restarts.items())),
            _gauge("workers", "Worker processes the daemon runs (streams.workers).", len(up))]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed([*families.values(), *mine]))
    return generate_latest(registry)
