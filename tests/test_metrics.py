"""Prometheus metrics at /metrics, parsed with prometheus_client's own parser and checked against
real simulated calls streamed to a real WebSocket endpoint."""

from __future__ import annotations

import math
import struct

import gevent
import pytest
from conftest import wait_until
from helpers.calls import originate
from httpc import request
from prometheus_client.parser import text_string_to_metric_families
from wspeer import WSPeer

from esl_audio_stream.app import events
from esl_audio_stream.app.stats import SAMPLE_EVERY, Counters, FrameTimer
from esl_audio_stream.ops.status import FLOOR_DB, format_table, level_db

#: Each test that uses the daemon runs on the native pump and on the Python path (conftest).
pytestmark = pytest.mark.both_paths


P = "esl_audio_stream_"


def scrape(daemon) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    host, port = daemon.control.address
    code, headers, body = request(f"http://{host}:{port}/metrics")
    assert code == 200, body
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def val(m: dict, name: str, **labels: str) -> float:
    return m.get((P + name, tuple(sorted(labels.items()))), 0.0)


# -- the pure parts -------------------------------------------------------------------------


def test_frame_timer_buckets_are_cumulative():
    t = FrameTimer((0.001, 0.01))
    for s in (0.0005, 0.001, 0.002, 0.5):
        t.observe(s)
    assert t.cumulative() == [("0.001", 2), ("0.01", 3), ("+Inf", 4)]
    assert t.count == 4 and t.sum == pytest.approx(0.5035)


def test_the_bench_reads_a_quantile_off_two_scrapes_of_a_histogram():
    """dev/bench.py's p50/p99 of the daemon's own latency: what the buckets gained between the
    scrapes, interpolated in the bucket as Prometheus' histogram_quantile does."""
    from esl_audio_stream.dev.bench import _bucket_quantile

    inf = float("inf")
    before = {0.001: 10.0, 0.005: 10.0, inf: 10.0}
    after = {0.001: 60.0, 0.005: 108.0, inf: 110.0}  # gained: 50 <= 1 ms, 48 more <= 5, 2 above
    assert _bucket_quantile(before, after, 0.5) == pytest.approx(0.001)
    assert _bucket_quantile(before, after, 0.25) == pytest.approx(0.0005)
    assert _bucket_quantile(before, after, 0.9) == pytest.approx(0.001 + 0.004 * 40 / 48)
    assert _bucket_quantile(before, after, 0.99) == 0.005  # in +Inf: the last finite bound
    assert math.isnan(_bucket_quantile(after, after, 0.5))  # nothing observed between


def test_counters_count_events_by_code():
    c = Counters()
    c.count_event(events.ERROR, events.error_body(6, "refused"))
    c.count_event(events.ERROR, events.error_body(6, "refused", retries=2))
    c.count_event(events.DISCONNECT, events.disconnect_body(1000))
    c.count_event(events.ERROR, "not json")  # counted, under code 0
    c.count_event(events.JSON, '{"code": 3}')  # not an error: not counted
    assert c.errors == {6: 2, 0: 1} and c.disconnects == {1000: 1}


def test_level_meter():
    sine = b"".join(struct.pack("<h", int(32767 * math.sin(2 * math.pi * i / 20)))
                    for i in range(160))
    assert level_db(sine) == pytest.approx(-3.0, abs=0.1)
    assert level_db(bytes(320)) == FLOOR_DB
    assert level_db(b"") == FLOOR_DB
    quiet = b"".join(struct.pack("<h", 33 if i % 2 else -33) for i in range(160))
    assert level_db(quiet) == pytest.approx(-59.9, abs=0.05)  # 33 / 32768


def test_table_aligns_columns():
    text = format_table([
        {"uuid": "a", "url": "ws://x/", "mix": "mono", "rate": 8000, "state": "streaming",
         "seconds": 1.25, "frames": 5, "dropped": 0, "reconnects": 0},
        {"uuid": "bbbb", "url": "ws://long/", "mix": "stereo", "rate": 16000, "state": "paused",
         "seconds": 10.0, "frames": 12345, "dropped": 2, "reconnects": 1},
    ])
    lines = text.splitlines()
    assert lines[0].split() == ["UUID", "URL", "MIX", "RATE", "STATE", "SECONDS", "FRAMES",
                                "DROPPED", "RECONNECTS"]
    assert lines[1].split() == ["a", "ws://x/", "mono", "8000", "streaming", "1.2", "5", "0", "0"]
    assert len({len(line) for line in lines}) == 1  # numbers right-aligned to the last column
    assert format_table([]) == "no live streams\n"


# -- against a real call --------------------------------------------------------------------


def test_metrics_follow_a_call_from_start_to_hang_up(esl, daemon, peer, sim):
    m = scrape(daemon)
    assert val(m, "esl_connected") == 1
    assert val(m, "streams_active") == 0 and val(m, "streams_started_total") == 0

    uuid = originate(esl)
    assert daemon.execute(f"{uuid} start {peer.url()} mono 16k") == "+OK Success\n"
    stream = daemon.streams[uuid]
    conn = peer.wait_connection()
    assert wait_until(lambda: len(conn.binary) >= 3 * SAMPLE_EVERY, 10)
    received = len(conn.binary)

    m = scrape(daemon)
    assert val(m, "streams_active") == 1 and val(m, "streams_started_total") == 1
    frames_in = val(m, "frames_in_total")
    frames_out = val(m, "frames_out_total")
    assert 3 * SAMPLE_EVERY <= frames_in <= stream.frames_in
    assert received <= frames_out <= stream.frames_out
    assert val(m, "bytes_out_total") == frames_out * 640  # 20 ms at 16 kHz
    assert val(m, "frames_dropped_total") == 0
    # one frame in SAMPLE_EVERY is timed, read in the same scrape as frames_in
    count = val(m, "frame_processing_seconds_count")
    assert count == frames_in // SAMPLE_EVERY
    assert val(m, "frame_processing_seconds_bucket", le="+Inf") == count
    assert 0 < val(m, "frame_processing_seconds_sum") < count * 0.02
    # ... and each timed frame's latency from the kernel's arrival stamp of its datagram
    latency = val(m, "frame_latency_seconds_count")
    assert latency == count
    assert val(m, "frame_latency_seconds_bucket", le="+Inf") == latency
    assert 0 < val(m, "frame_latency_seconds_sum") < latency * 1.0  # stamps from this host
    # the heap walk that counts the greenlets (the daemon's, the stream's, the peer's)
    assert val(m, "greenlets") >= 2

    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: not daemon.streams, 5)
    m = scrape(daemon)
    assert val(m, "streams_active") == 0
    assert val(m, "streams_ended_total", reason="hangup") == 1
    # the counts of an ended stream stay in the totals, exactly
    assert val(m, "frames_in_total") == stream.frames_in
    assert val(m, "frames_out_total") == stream.frames_out
    assert val(m, "websocket_disconnects_total", code="1000") == 1
    assert wait_until(conn.closed.is_set, 5)
    assert len(conn.binary) == stream.frames_out  # what was counted out is what arrived


def test_errors_reconnects_and_playback_queue(esl, daemon, peer):
    # a refused connection: libwsc's CONNECT_FAILED (6)
    dead = WSPeer().start()
    dead_url = dead.url()
    dead.stop()
    uuid = originate(esl)
    assert daemon.execute(f"{uuid} start {dead_url} mono 8k").startswith("-ERR ")
    m = scrape(daemon)
    assert val(m, "websocket_errors_total", code="6") == 1
    assert val(m, "streams_started_total") == 0

    # a close that means "try again" (1012): reconnected, counted
    assert daemon.execute(f"{uuid} start {peer.url()} mono 8k") == "+OK Success\n"
    first = peer.wait_connection()
    peer.close(first, 1012, "restarting")
    peer.wait_connection(2)
    assert wait_until(lambda: val(scrape(daemon), "websocket_reconnects_total") == 1, 5)
    assert val(scrape(daemon), "websocket_disconnects_total", code="1012") == 1

    # two seconds of audio from the endpoint wait in the playback queue
    second = peer.connections[1]
    assert wait_until(lambda: len(second.binary) > 5, 5)
    peer.send_binary(second, bytes(2 * 8000 * 2))
    assert wait_until(lambda: val(scrape(daemon), "playback_queue_seconds") > 1.0, 5)
    queued = val(scrape(daemon), "playback_queue_seconds")
    assert 0 < queued <= 2.0
    gevent.sleep(0.3)
    assert val(scrape(daemon), "playback_queue_seconds") < queued  # it plays out
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: not daemon.streams, 5)
    assert val(scrape(daemon), "websocket_reconnects_total") == 1  # kept after the call ends


def test_a_dead_weak_proxy_on_the_heap_does_not_break_the_scrape(daemon):
    """Counting greenlets walks the heap; a weakref.proxy whose object is gone raises
    ReferenceError when asked for its class (an earlier test's leftovers made /metrics a 500)."""
    import weakref

    class Gone:
        pass

    obj = Gone()
    proxy = weakref.proxy(obj)
    del obj
    with pytest.raises(ReferenceError):
        proxy.__class__  # noqa: B018  # the proxy is dead: what isinstance() would trip on
    assert val(scrape(daemon), "greenlets") >= 1  # scrape() asserts the 200
    assert proxy is not None  # (kept alive, dead, until the scrape is done)
