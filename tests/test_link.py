"""call/link.py's state machine and its one queue: driven by scripted connections where the
moment matters, and against real peers (a `websockets` server that stops reading, a wsproto
server that reads nothing) where the socket's own behaviour matters."""

from __future__ import annotations

import json

import gevent
import pytest
from conftest import wait_until
from helpers.fakews import FakeConnection, Script
from helpers.rawws import RawWSServer
from wspeer import WSPeer

from esl_audio_stream.app import events
from esl_audio_stream.call.link import Link, LinkState
from esl_audio_stream.ws import outgoing


def make_link(url: str, fired: list, **kw) -> Link:
    kw.setdefault("backlog_bytes", 100 * 320)
    return Link(url, uuid="u", fire=lambda sub, body: fired.append((sub, json.loads(body))),
                on_text=lambda t: None, on_binary=lambda b: None,
                on_gone=lambda c, r: fired.append(("gone", {"code": c, "reason": r})),
                metadata="META", reconnect=True, **kw)


def frame(n: int, size: int = 320) -> bytes:
    return n.to_bytes(4, "big") + bytes(size - 4)


def test_the_state_and_the_per_frame_send_follow_the_connection() -> None:
    first, second = FakeConnection(), FakeConnection()
    fired: list = []
    link = make_link("ws://x/", fired, connection_factory=Script(first, second))
    assert link.state is LinkState.CONNECTING and link.send == link._to_backlog
    link.send_text("early")  # before the connection: waits, after the metadata
    link.connect()
    assert link.state is LinkState.LIVE and link.send == link._send_live
    assert first.sent == ["META", "early"]
    first.congested = True
    first.drained.clear()
    first.on_blocked()  # the kernel stopped taking bytes
    assert link.state is LinkState.BACKLOGGED and link.send == link._to_backlog
    link.send(frame(1))
    assert first.sent == ["META", "early"]
    first.congested = False
    first.drained.set()
    assert wait_until(lambda: link.state is LinkState.LIVE, 3)
    assert first.sent[-1] == frame(1)
    first.drop(1006, "gone")
    assert link.state is LinkState.RECONNECTING and link.send == link._to_backlog
    assert fired[-1] == (events.DISCONNECT, {"status": "disconnected",
                                             "message": {"code": 1006, "reason": "gone"}})
    link.send(frame(2))
    assert wait_until(lambda: link.state is LinkState.LIVE, 3)
    assert second.sent == ["META", frame(2)] and link.reconnects == 1
    link.close(1000, "bye", "last words")
    assert link.state is LinkState.CLOSED and not link.send(frame(3))
    assert not link.send_text("late")
    assert second.sent[-1] == "last words"
    assert link.dropped_total == 0  # a refused send after the close is not a backlog drop


def test_no_transition_outside_the_table() -> None:
    link = make_link("ws://x/", [], connection_factory=Script(FakeConnection()))
    with pytest.raises(RuntimeError, match="connecting -> live"):
        link._set_state(LinkState.LIVE)  # only through BACKLOGGED, once a connection is taken
    link.abort()
    assert link.state is LinkState.CLOSED and not link.send(frame(0))


def test_one_worker_flushes_then_reconnects_when_its_connection_dies() -> None:
    first, second = FakeConnection(), FakeConnection()
    script = Script(first, second)
    link = make_link("ws://x/", [], connection_factory=script)
    link.connect()
    first.congested = True
    first.drained.clear()
    first.on_blocked()
    worker = link._worker
    assert worker is not None and not worker.dead
    for n in range(5):
        link.send(frame(n))
    gevent.sleep(0.05)  # the worker waits for the socket
    first.drop(1006, "reset")  # ... and the connection dies under it
    assert link.state is LinkState.RECONNECTING
    assert link._worker is worker  # the same greenlet goes on to reconnect
    assert wait_until(lambda: link.state is LinkState.LIVE, 3)
    assert second.sent == ["META", *[frame(n) for n in range(5)]]
    assert len(script.made) == 2
    link.abort()


def test_close_waits_for_a_slow_endpoint_then_the_text_then_the_close_frame() -> None:
    """The endpoint stops reading while ~2 MB are queued; it reads again 0.3 s into the close:
    everything goes, in order, then the final text, then 1000."""
    peer = WSPeer().start()
    try:
        link = make_link(peer.url("/slow"), [], backlog_bytes=4 << 20, close_timeout=5)
        link.connect()
        conn = peer.wait_connection()
        transport = conn.ws.transport
        peer._loop.call_soon_threadsafe(transport.pause_reading)
        gevent.sleep(0.05)
        sent = [frame(n, 3200) for n in range(640)]  # 2 MB: far more than the kernels hold
        for f in sent:
            assert link.send(f)
        assert link.state is LinkState.BACKLOGGED and len(link._backlog) > 100

        def resume() -> None:
            gevent.sleep(0.3)
            peer._loop.call_soon_threadsafe(transport.resume_reading)

        gevent.spawn(resume)
        link.close(1000, "done", "bye")
        assert wait_until(conn.closed.is_set, 5)
        assert conn.binary == sent
        assert conn.messages[0] == "META" and conn.messages[-1] == "bye"
        assert conn.close_code == 1000 and conn.close_reason == "done"
        assert link.dropped_total == 0
    finally:
        peer.stop()


def test_a_peer_that_takes_nothing_is_lost_and_the_backlog_goes_to_the_next(monkeypatch) -> None:
    monkeypatch.setattr(outgoing, "WRITE_STALL_TIMEOUT", 0.5)
    server = RawWSServer(["stall", "read"])
    fired: list = []
    link = make_link(server.url("/stall"), fired, backlog_bytes=4000 * 640, deflate=False)
    try:
        link.connect()
        server.wait_conn(1)
        n = 0
        while link.state is not LinkState.BACKLOGGED:  # until the kernels are full
            assert link.send(frame(n, 640))
            n += 1
            if n % 50 == 0:
                gevent.sleep(0)
        for _ in range(20):  # the stream goes on: into the backlog
            assert link.send(frame(n, 640))
            n += 1
        assert wait_until(lambda: any(s == events.DISCONNECT for s, _ in fired), 3)
        lost = next(b for s, b in fired if s == events.DISCONNECT)["message"]
        assert lost == {"code": 1006, "reason": "peer accepted no data for 0.5 s"}
        second = server.wait_conn(2)
        assert wait_until(lambda: second.binary and
                          int.from_bytes(second.binary[-1][:4], "big") == n - 1, 5)
        got = [int.from_bytes(b[:4], "big") for b in second.binary]
        assert second.messages[0] == "META"
        assert got == list(range(got[0], n))  # what the link held, in order, nothing twice
        assert link.state is LinkState.LIVE and link.reconnects == 1
    finally:
        link.abort()
        server.stop()
