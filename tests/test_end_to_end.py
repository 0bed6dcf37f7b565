"""A parked call's audio, end to end: simulator (ESL + unicast) -> daemon -> a real `websockets`
server on loopback, with events checked by a second ESL subscriber."""

from __future__ import annotations

import contextlib
import gc
import json
import os

import gevent
import pytest
from conftest import wait_until
from helpers.calls import originate

from esl_audio_stream.app import events
from esl_audio_stream.call.stream import Stream
from esl_audio_stream.dev.analysis import dominant_frequency
from esl_audio_stream.dev.simulator import park as sim_park

#: Each test that uses the daemon runs on the native pump and on the Python path (conftest).
pytestmark = pytest.mark.both_paths


def subscribe_stream_events(esl) -> None:
    esl.subscribe("CUSTOM", events.CONNECT, events.DISCONNECT, events.JSON, events.ERROR)
    gevent.sleep(0.1)


def stream_events(esl, uuid: str, subclass: str | None = None) -> list:
    return [e for e in esl.seen if e.get(events.STREAM_UUID_HEADER) == uuid
            and (subclass is None or e.subclass == subclass)]


@pytest.mark.parametrize(
    ("channel_rate", "rate", "size"),
    [(8000, 16000, 640), (16000, 16000, 640), (48000, 16000, 640), (8000, 8000, 320),
     (16000, 8000, 320)],
)
def test_stream_reaches_endpoint_whole_and_on_time(esl, daemon, peer, channel_rate, rate, size):
    uuid = originate(esl, rate=channel_rate)
    word = {8000: "8k", 16000: "16k"}[rate]
    answer = daemon.execute(f'{uuid} start {peer.url("/s")} mono {word} {{"call":"{uuid}"}}')
    assert answer == "+OK Success\n"
    conn = peer.wait_connection()
    assert wait_until(lambda: len(conn.binary) >= 5)
    first = len(conn.binary)
    gevent.sleep(2.0)
    got = len(conn.binary) - first
    assert abs(got / 2.0 - 50) <= 2, got
    assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
    assert wait_until(conn.closed.is_set, 5) and conn.close_code == 1000
    assert conn.messages[0] == f'{{"call":"{uuid}"}}'  # metadata first, before any audio
    assert {len(m) for m in conn.binary} == {size}
    freq = dominant_frequency(conn.audio[size * 5:], rate)  # skip the resampler's warm-up
    assert abs(freq - 440) <= 5, freq
    esl.api(f"uuid_kill {uuid}")


def test_events_reach_a_subscriber_in_each_call_state(esl, daemon, peer):
    subscribe_stream_events(esl)
    uuid = originate(esl)
    assert daemon.execute(f"{uuid} start {peer.url()} mono 16k") == "+OK Success\n"
    conn = peer.wait_connection()
    assert wait_until(lambda: stream_events(esl, uuid, events.CONNECT), 2)
    connect = stream_events(esl, uuid, events.CONNECT)[0]
    assert connect.name == "CUSTOM" and connect.uuid == uuid
    assert connect.body == b'{"status":"connected"}'
    # endpoint answers while the call is parked: json event, routed through the channel
    peer.send_text(conn, '{"transcript":"hello"}')
    assert wait_until(lambda: stream_events(esl, uuid, events.JSON), 2)
    js = stream_events(esl, uuid, events.JSON)[0]
    assert js.name == "CUSTOM" and js.uuid == uuid and js.body == b'{"transcript":"hello"}'
    # not even valid JSON: relayed as received
    peer.send_text(conn, "not json {")
    assert wait_until(lambda: len(stream_events(esl, uuid, events.JSON)) == 2, 2)
    assert stream_events(esl, uuid, events.JSON)[1].body == b"not json {"
    # hang-up: the disconnect event still arrives, with Unique-ID, after CHANNEL_DESTROY
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(conn.closed.is_set, 5) and conn.close_code == 1000
    assert wait_until(lambda: stream_events(esl, uuid, events.DISCONNECT), 3)
    disc = stream_events(esl, uuid, events.DISCONNECT)[0]
    assert disc.name == "CUSTOM" and disc.uuid == uuid
    assert json.loads(disc.body) == {"status": "disconnected",
                                     "message": {"code": 1000, "reason": "Normal closure"}}


def test_events_of_a_call_running_an_application_still_arrive(esl, daemon, peer, sim):
    subscribe_stream_events(esl)
    uuid = originate(esl)
    assert daemon.execute(f"{uuid} start {peer.url()} mono 8k") == "+OK Success\n"
    conn = peer.wait_connection()
    wait_until(lambda: daemon.call_state(uuid) is events.CallState.PARKED, 2)
    # the call leaves park for an application: FreeSWITCH would drop an event routed to it
    esl.api(f"uuid_transfer {uuid} playback:/nonexistent.wav inline")
    assert wait_until(lambda: daemon.call_state(uuid) is events.CallState.BUSY, 2)
    peer.send_text(conn, '{"late":1}')
    assert wait_until(lambda: stream_events(esl, uuid, events.JSON), 2)
    js = stream_events(esl, uuid, events.JSON)[0]
    assert js.name == "CUSTOM" and js.body == b'{"late":1}'
    esl.api(f"uuid_kill {uuid}")


def test_stop_text_and_endpoint_close(esl, daemon, peer):
    subscribe_stream_events(esl)
    uuid = originate(esl)
    assert daemon.execute(f"{uuid} start {peer.url()} mono 16k") == "+OK Success\n"
    conn = peer.wait_connection()
    assert wait_until(lambda: len(conn.binary) > 3)
    assert daemon.execute(f'{uuid} stop {{"bye":true}}') == "+OK Success\n"
    assert wait_until(conn.closed.is_set, 5)
    assert conn.messages[-1] == '{"bye":true}' and conn.close_code == 1000
    assert uuid not in daemon.streams
    # the call goes on, re-parked, and can be streamed again; this time the endpoint hangs up
    assert wait_until(lambda: daemon.execute(f"{uuid} start {peer.url()} mono 16k")
                      == "+OK Success\n", 3)
    conn2 = peer.wait_connection(2)
    assert wait_until(lambda: len(conn2.binary) > 3)
    peer.close(conn2, 4000, "bot done")
    assert wait_until(lambda: uuid not in daemon.streams, 5)
    assert wait_until(lambda: len(stream_events(esl, uuid, events.DISCONNECT)) == 2, 3)
    body = json.loads(stream_events(esl, uuid, events.DISCONNECT)[1].body)
    assert body["message"] == {"code": 4000, "reason": "bot done"}
    esl.api(f"uuid_kill {uuid}")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _count(kind: type, alive=lambda o: True) -> int:
    n = 0
    for o in gc.get_objects():
        # a weakref.proxy whose referent is gone raises on isinstance
        with contextlib.suppress(ReferenceError):
            n += isinstance(o, kind) and alive(o)
    return n


def _streams_alive() -> int:
    return _count(Stream)


def test_hangup_leaves_nothing_behind(esl, daemon, peer, sim):
    # warm up once so lazily created resources (hub, threadpool, resolver) are counted before
    uuid = originate(esl)
    assert daemon.execute(f"{uuid} start {peer.url()} mono 16k") == "+OK Success\n"
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: not daemon.streams, 5)
    gevent.sleep(0.2)
    fds, greenlets = _open_fds(), _greenlets()
    for n in range(3):
        uuid = originate(esl)
        assert daemon.execute(f"{uuid} start {peer.url()} mono 16k") == "+OK Success\n"
        conn = peer.wait_connection(n + 2)
        assert wait_until(lambda c=conn: len(c.binary) > 3)
        esl.api(f"uuid_kill {uuid}")
        assert wait_until(conn.closed.is_set, 5) and conn.close_code == 1000
        assert wait_until(lambda: not daemon.streams, 5)
    gevent.sleep(0.3)
    gc.collect()
    assert daemon.ports.in_use == 0
    assert _streams_alive() == 0
    assert _open_fds() <= fds
    assert _greenlets() <= greenlets


def _greenlets() -> int:
    return _count(gevent.Greenlet, lambda g: not g.dead)


def test_bad_input_gets_clear_answers_and_harms_no_other_call(esl, daemon, peer):
    uuid = originate(esl)
    assert daemon.execute(f"{uuid} start {peer.url()} mono 16k") == "+OK Success\n"
    conn = peer.wait_connection()
    other = originate(esl)
    unknown = "6f0e7a4c-0000-4000-8000-000000000000"
    cases = {
        f"{unknown} start {peer.url()} mono 16k": "no such channel",
        f"not/a/uuid start {peer.url()} mono 16k": "invalid uuid",
        f"{other} start http://127.0.0.1/x mono 16k": "invalid websocket uri",
        f"{other} start {peer.url()} quad 16k": "invalid mix type",
        f"{other} start {peer.url()} mono 96000": "invalid sample rate",
        f"{uuid} start {peer.url()} mono 16k": "already running",
        f"{other} stop": "no audio stream",
        f"{other} start ws://127.0.0.1:1/dead mono 16k": "cannot connect",
    }
    for args, needle in cases.items():
        answer = daemon.execute(args)
        assert answer.startswith("-ERR ") and needle in answer, (args, answer)
    assert "invalid utf8" in daemon.execute(
        f"{other} start {peer.url()} mono 16k ".encode() + b"\xff")
    assert daemon.execute("").startswith("-USAGE: ")
    # the streaming call never noticed
    before = len(conn.binary)
    gevent.sleep(0.3)
    assert len(conn.binary) > before and not conn.closed.is_set()
    assert list(daemon.streams) == [uuid]
    assert daemon.ports.in_use == 1
    esl.api(f"uuid_kill {uuid}")
    esl.api(f"uuid_kill {other}")


def test_dead_endpoint_fires_error_event(esl, daemon):
    subscribe_stream_events(esl)
    uuid = originate(esl)
    answer = daemon.execute(f"{uuid} start ws://127.0.0.1:1/dead mono 16k")
    assert answer.startswith("-ERR cannot connect")
    assert wait_until(lambda: stream_events(esl, uuid, events.ERROR), 2)
    body = json.loads(stream_events(esl, uuid, events.ERROR)[0].body)
    assert body["status"] == "error" and body["message"]["code"] == events.WS_CONNECT_FAILED
    assert daemon.ports.in_use == 0 and not daemon.streams
    esl.api(f"uuid_kill {uuid}")


def test_cng_frames_become_silence(esl, daemon, peer, sim):
    answer = esl.api("originate {channel_rate=8000,sim_cng_every=2}loopback/1000/default &park()")
    uuid = answer.split()[1]
    # parked first: CNG is a unicast thing (a tap, used for calls not parked, carries none)
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    assert daemon.execute(f"{uuid} start {peer.url()} mono 8k") == "+OK Success\n"
    conn = peer.wait_connection()
    assert wait_until(lambda: len(conn.binary) >= 20)
    frames = conn.binary[:20]
    assert any(f == bytes(320) for f in frames)  # the CNG frames, as silence
    assert not any(f == b"\xff" * 320 for f in frames)
    assert any(f != bytes(320) for f in frames)  # and the tone between them
    esl.api(f"uuid_kill {uuid}")


def test_events_fired_while_esl_is_down_go_out_when_it_is_back(esl, daemon, peer, sim):
    import socket as _socket

    subscribe_stream_events(esl)
    uuid = originate(esl)
    assert daemon.execute(f"{uuid} start {peer.url()} mono 8k") == "+OK Success\n"
    conn = peer.wait_connection()
    assert wait_until(lambda: len(conn.binary) > 3)
    daemon.esl._sock.shutdown(_socket.SHUT_RDWR)  # FreeSWITCH goes away for a moment
    assert wait_until(lambda: not daemon.esl.connected, 2)
    for i in range(3):
        peer.send_text(conn, json.dumps({"n": i}))
    assert wait_until(lambda: daemon.events_kept == 3, 2)  # kept, not lost
    assert wait_until(lambda: len(stream_events(esl, uuid, events.JSON)) == 3, 5)
    bodies = [json.loads(e.body) for e in stream_events(esl, uuid, events.JSON)]
    assert bodies == [{"n": 0}, {"n": 1}, {"n": 2}]  # all of them, in order
    assert not daemon.outbox.unsent and daemon.events_failed == 0
    esl.api(f"uuid_kill {uuid}")


def test_an_event_the_channel_never_fires_is_fired_again_after_the_hangup(
        esl, daemon, peer, sim, monkeypatch):
    """A json event routed through the parked call, and the call hangs up before its park loop
    fires it: FreeSWITCH drops it with the session; the daemon sees it never came back and fires
    it again once the call is destroyed. One that did come back is not fired twice."""
    subscribe_stream_events(esl)
    uuid = originate(esl)
    assert daemon.execute(f"{uuid} start {peer.url()} mono 8k") == "+OK Success\n"
    conn = peer.wait_connection()
    assert wait_until(lambda: len(conn.binary) > 3)
    peer.send_text(conn, json.dumps({"n": "delivered"}))
    assert wait_until(lambda: len(stream_events(esl, uuid, events.JSON)) == 1, 2)
    assert wait_until(lambda: not daemon.outbox.routed, 2)  # it came back: nothing to fire again
    monkeypatch.setattr(sim_park, "dequeue_event", lambda sw, ch: None)  # the park loop is too late
    peer.send_text(conn, json.dumps({"n": "stuck"}))
    assert wait_until(lambda: len(sim.channel(uuid).events) == 1, 2)
    esl.api(f"uuid_kill {uuid}")
    assert wait_until(lambda: len(stream_events(esl, uuid, events.JSON)) == 2, 3)
    bodies = [json.loads(e.body)["n"] for e in stream_events(esl, uuid, events.JSON)]
    assert bodies == ["delivered", "stuck"] and daemon.events_refired == 1
    refired = stream_events(esl, uuid, events.JSON)[-1]
    assert refired.get("Unique-ID") == uuid  # fired at once, the session being gone
