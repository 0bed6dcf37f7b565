"""Reconnection that loses no audio, and the backlog that bounds memory: against a real
`websockets` server that is killed and restarted, and `Link` driven directly."""

from __future__ import annotations

import json

import gevent
import pytest
from conftest import wait_until
from helpers.fakews import FakeConnection, Script
from wspeer import WSPeer

from esl_audio_stream.app import events
from esl_audio_stream.call.link import Link

#: Each test that uses the daemon runs on the native pump and on the Python path (conftest).
pytestmark = pytest.mark.both_paths


def parked_call(esl, variables: str = "") -> str:
    extra = f",{variables}" if variables else ""
    answer = esl.api(f"originate {{channel_rate=8000,sim_record_audio=true{extra}}}"
                     "loopback/1000/default &park()")
    uuid = answer.split()[1]
    assert wait_until(lambda: esl.api(f"uuid_getvar {uuid} current_application") == "park")
    return uuid


def stream_events(esl, uuid, subclass):
    return [e for e in esl.seen if e.subclass == subclass
            and e.get(events.STREAM_UUID_HEADER) == uuid]


def test_endpoint_killed_and_restarted_20_times_loses_nothing(esl, daemon, sim):
    esl.subscribe("CUSTOM", events.CONNECT, events.DISCONNECT, events.ERROR)
    gevent.sleep(0.1)
    peer = WSPeer().start()
    port = peer.port
    uuid = parked_call(esl)
    # 8k in, 8k out: the daemon forwards FreeSWITCH's bytes unchanged, so they can be compared
    assert daemon.execute(f"{uuid} start ws://127.0.0.1:{port}/r mono 8k META") == "+OK Success\n"
    peers = [peer]
    try:
        for n in range(20):
            conn = peer.wait_connection(1, timeout=10)
            assert wait_until(lambda c=conn: len(c.binary) >= 5, 5)
            # right after a frame arrived, so what is in flight is what a 20 ms gap holds
            # (on a loaded machine a late kill would find more unread in the peer's socket)
            seen = len(conn.binary)
            assert wait_until(lambda c=conn, n=seen: len(c.binary) > n, 2, 0.001)
            peer.kill()  # a crash: no close frame
            gevent.sleep(0.15 + 0.05 * (n % 3))  # down for a while: audio waits in the backlog
            peer = WSPeer(port=port).start()
            peers.append(peer)
        last = peer.wait_connection(1, timeout=10)
        assert wait_until(lambda: len(last.binary) >= 10, 5)
        assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
        assert wait_until(last.closed.is_set, 5)
    finally:
        peer.stop()
    sent = bytes(sim.channel(uuid).sent_audio)
    conns = [c for p in peers for c in p.connections]
    assert len(conns) == 21
    assert all(c.messages and c.messages[0] == "META" for c in conns)  # metadata first, each time
    # Each connection got a contiguous run of exactly what FreeSWITCH sent, in order, with no
    # duplicate. The only audio that may be missing is what the endpoint's kernel had accepted
    # and the endpoint never read before it was killed: WebSocket has no acknowledgements, so no
    # client can know those bytes were lost. Anything the daemon knew was unsent is resent.
    pos = missing = 0
    for n, c in enumerate(conns):
        audio = c.audio
        assert audio and len(audio) % 320 == 0
        for skip in range(5):  # 5 = the tone's period in frames: unambiguous below it
            at = pos + skip * 320
            if sent[at:at + len(audio)] == audio:
                break
        else:
            frames = [audio[i:i + 320] for i in range(0, len(audio), 320)]
            bad = next(i for i, f in enumerate(frames)
                       if f != sent[pos + i * 320:pos + (i + 1) * 320])
            pytest.fail(f"connection {n} ({len(frames)} frames): differs from frame {bad} on; "
                        f"texts {c.texts}")
        missing += skip
        pos = at + len(audio)
    assert missing <= 10, missing  # at most one frame in flight per kill, usually none
    assert len(sent) - pos <= 320 * 3  # only what was in flight at the stop
    assert wait_until(lambda: len(stream_events(esl, uuid, events.CONNECT)) == 21, 3)
    assert wait_until(lambda: len(stream_events(esl, uuid, events.DISCONNECT)) >= 21, 3)
    errors = [json.loads(e.body)["message"] for e in stream_events(esl, uuid, events.ERROR)]
    # (none when every reconnect happened to come after the endpoint was back)
    assert all(m["code"] == events.WS_CONNECT_FAILED and m["retries"] >= 1
               and m["wait_time"] > 0 for m in errors)
    esl.api(f"uuid_kill {uuid}")


def test_normal_close_and_refusals_are_not_retried(esl, daemon, peer):
    esl.subscribe("CUSTOM", events.DISCONNECT)
    gevent.sleep(0.1)
    uuid = parked_call(esl)
    assert daemon.execute(f"{uuid} start {peer.url()} mono 8k") == "+OK Success\n"
    conn = peer.wait_connection()
    assert wait_until(lambda: len(conn.binary) > 3)
    peer.close(conn, 1000, "done")
    assert wait_until(lambda: uuid not in daemon.streams, 5)
    gevent.sleep(0.5)
    assert len(peer.connections) == 1  # no reconnection after a normal close
    body = json.loads(stream_events(esl, uuid, events.DISCONNECT)[-1].body)
    assert body["message"] == {"code": 1000, "reason": "done"}
    esl.api(f"uuid_kill {uuid}")


def test_no_reconnect_variable_ends_the_stream_on_a_drop(esl, daemon):
    peer = WSPeer().start()
    uuid = parked_call(esl, "STREAM_NO_RECONNECT=true")
    try:
        assert daemon.execute(f"{uuid} start {peer.url()} mono 8k") == "+OK Success\n"
        conn = peer.wait_connection()
        assert wait_until(lambda: len(conn.binary) > 3)
        peer.kill()
        assert wait_until(lambda: uuid not in daemon.streams, 5)
    finally:
        peer.stop()
    esl.api(f"uuid_kill {uuid}")


def test_refused_reconnection_reports_http_status(esl, daemon):
    """The endpoint comes back answering 403: each try is an error event with http_status."""
    from gevent.server import StreamServer

    esl.subscribe("CUSTOM", events.ERROR)
    gevent.sleep(0.1)
    peer = WSPeer().start()
    port = peer.port
    uuid = parked_call(esl)
    assert daemon.execute(f"{uuid} start {peer.url()} mono 8k") == "+OK Success\n"
    conn = peer.wait_connection()
    assert wait_until(lambda: len(conn.binary) > 3)
    peer.kill()

    def refuse(sock, _addr):
        sock.recv(4096)
        sock.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        sock.close()

    server = StreamServer(("127.0.0.1", port), refuse)
    server.init_socket()
    server.start()
    try:
        assert wait_until(lambda: any(
            json.loads(e.body)["message"].get("http_status") == 403
            for e in stream_events(esl, uuid, events.ERROR)), 5)
        msg = next(json.loads(e.body)["message"] for e in stream_events(esl, uuid, events.ERROR)
                   if json.loads(e.body)["message"].get("http_status") == 403)
        assert msg["code"] == events.WS_INVALID_HEADER and msg["retries"] >= 1
        assert uuid in daemon.streams  # still trying, audio kept in the backlog meanwhile
    finally:
        server.stop()
    assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
    esl.api(f"uuid_kill {uuid}")


@pytest.fixture
def link():
    ws = FakeConnection()
    script = Script(ws)
    fired: list[tuple[str, dict]] = []
    lk = Link("ws://x/", uuid="u", fire=lambda sub, body: fired.append((sub, json.loads(body))),
              on_text=print, on_binary=print, on_gone=lambda c, r: None, metadata="M",
              reconnect=True, backlog_bytes=10 * 320, connection_factory=script)
    lk.fired = fired
    lk.script = script
    lk.connect()
    ws.sent.clear()  # (the metadata: what follows is about the audio)
    yield lk, ws
    lk.abort()


def test_backpressure_queues_in_order_and_drops_oldest(link):
    lk, ws = link
    frames = [bytes([n]) * 320 for n in range(40)]
    lk.send(frames[0])
    assert ws.sent == [frames[0]]
    ws.congested = True  # the endpoint stops reading
    ws.drained.clear()
    for f in frames[1:31]:
        assert lk.send(f)
    lk.send_text("T")  # text keeps its place and is never dropped
    assert len(ws.sent) == 1  # nothing more reached the connection
    assert lk.dropped_total == 20  # the bound is 10 frames: the 20 oldest went
    ws.congested = False
    ws.drained.set()
    assert wait_until(lambda: lk.send == lk._send_live, 2)
    lk.send(frames[31])
    assert ws.sent == [frames[0], *frames[21:31], "T", frames[31]]
    sub, body = lk.fired[-1]
    assert sub == events.ERROR and body["message"]["dropped"] == 20


def test_reconnection_sends_metadata_then_backlog_then_live(link):
    lk, _ws = link
    _ws.drop(1006, "gone")  # the connection drops
    assert lk.fired[-1][0] == events.DISCONNECT
    frames = [bytes([n]) * 320 for n in range(5)]
    for f in frames[:3]:
        lk.send(f)
    lk.send_text("while away")
    new = FakeConnection()
    lk.script.queue.append(new)  # what the reconnection will get
    assert wait_until(lambda: lk.reconnects == 1, 3)
    for f in frames[3:]:
        lk.send(f)
    assert new.sent == ["M", *frames[:3], "while away", *frames[3:]]
    assert lk.reconnects == 1 and lk.fired[-1][0] == events.CONNECT


def test_stop_while_the_endpoint_lags_sends_the_backlog_before_the_close(esl, daemon, sim):
    """A stop while audio waits in the backlog (the socket was full): it all goes before the
    close frame, not dropped with the connection."""
    peer = WSPeer().start()
    try:
        uuid = parked_call(esl)
        assert daemon.execute(f"{uuid} start {peer.url('/b')} mono 8k") == "+OK Success\n"
        conn = peer.wait_connection(1)
        assert wait_until(lambda: len(conn.binary) >= 5, 5)
        link = daemon.streams[uuid]._link
        native = daemon.streams[uuid].pipeline.native
        if native is not None:  # the native pump gives the frames back to link.send
            native.leave()
        link.send = link._to_backlog  # as backpressure does: the next frames wait
        gevent.sleep(0.3)
        waiting = len(link._backlog)
        assert waiting >= 10
        # ... and the endpoint reads nothing for another 0.2 s
        transport = conn.ws.transport
        peer._loop.call_soon_threadsafe(transport.pause_reading)

        def drains() -> None:
            gevent.sleep(0.2)
            peer._loop.call_soon_threadsafe(transport.resume_reading)

        gevent.spawn(drains)
        at_stop = len(sim.channel(uuid).sent_audio)
        assert daemon.execute(f"{uuid} stop bye") == "+OK Success\n"
        assert wait_until(conn.closed.is_set, 5) and conn.close_code == 1000
        assert conn.messages[-1] == "bye"
        sent = bytes(sim.channel(uuid).sent_audio)
        got = conn.audio
        assert sent[:len(got)] == got
        assert len(got) >= at_stop - 320 * 3  # all FreeSWITCH had sent when the stop came
    finally:
        peer.stop()
    esl.api(f"uuid_kill {uuid}")
