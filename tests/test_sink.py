"""dev/sink.py's fast path (the bench's endpoint), which reads frames with ws/framing.py's
parser: what the project's own client sends arrives whole, in order, timed; pings are answered
and the close handshake completes, whether it reads eagerly or lazily."""

from __future__ import annotations

import os

import gevent
import pytest
from conftest import wait_until

from esl_audio_stream.dev.sink import AudioSink
from esl_audio_stream.ws.connection import WebSocketConnection


@pytest.fixture(params=[0.0, 0.05], ids=["eager", "lazy"])
def sink(request):
    """Both ways of reading: each message as it comes, and (the bench's --lazy-sink) each
    connection once every so often, a few messages a read."""
    s = AudioSink(keep_audio=True, record_times=True, fast=True, lazy=request.param)
    s.start()
    yield s
    s.stop()


def test_fast_sink_keeps_what_the_client_sent(sink: AudioSink) -> None:
    closes: list[tuple[int, str]] = []
    conn = WebSocketConnection(sink.url("/bench/x?rate=8000"), on_text=print, on_binary=print,
                               on_close=lambda code, reason: closes.append((code, reason)),
                               heartbeat=0.1)
    conn.connect()
    assert wait_until(lambda: sink.sessions, 3)
    session = sink.sessions[0]
    assert session.path == "/bench/x?rate=8000" and session.rate == 8000
    assert conn.send_text("hello ☎")
    audio = [os.urandom(n) for n in (320, 640, 125, 126, 70000)]
    for chunk in audio:
        assert conn.send_binary(chunk)
    assert wait_until(lambda: session.messages == len(audio), 3)
    gevent.sleep(0.35)  # idle: the client pings, the sink must answer
    assert conn.pings_sent >= 1 and conn.is_open and closes == []
    conn.close(1000, "done")
    assert wait_until(session.closed.is_set, 3)
    assert session.texts == ["hello ☎"]
    assert bytes(session.audio) == b"".join(audio)
    assert session.sizes == {len(a) for a in audio}
    assert session.times is not None and len(session.times) == len(audio)
    assert session.first_text_before_audio is True
    assert session.close_code == 1000 and session.close_reason == "done"
    assert closes == [(1000, "")]  # the sink answered our close (with the code alone)
