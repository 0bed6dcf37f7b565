"""The native pump in a running daemon: it carries a steady stream, gives control back whenever
the stream is not steady (pause, the endpoint's audio playing, a dropped connection) and takes it
again after; what it does not carry stays on the Python path; `[media] native = false` and a
machine without the extension stream as before."""

from __future__ import annotations

import gevent
import pytest
from conftest import wait_until
from gevent import socket as gsocket
from helpers.audio import stream_audio, tone
from helpers.calls import originate, start
from helpers.native import needs_native

from esl_audio_stream.call.link import Link
from esl_audio_stream.call.pipeline import FramePipeline
from esl_audio_stream.native import pump as native_pump
from esl_audio_stream.ws.framing import FrameWriter
from esl_audio_stream.ws.outgoing import Outgoing


def the_pump(daemon, uuid):
    return daemon.streams[uuid].pipeline.native


@needs_native
def test_a_steady_stream_is_carried_in_c_and_counted_exactly(esl, daemon, peer):
    uuid = originate(esl)
    conn = start(daemon, peer, uuid)
    stream = daemon.streams[uuid]
    pump = the_pump(daemon, uuid)
    assert wait_until(lambda: pump.armed, 2)
    at_arm = stream.frames_in
    assert wait_until(lambda: stream.frames_in >= at_arm + 50, 3)  # a second of C's frames
    assert len(stream.last_frame) == 320 and stream.malformed == 0
    assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
    assert wait_until(conn.closed.is_set, 5)
    assert len(conn.binary) == stream.frames_out  # what was counted out is what arrived
    assert {len(m) for m in conn.binary} == {640}
    assert pump.arms == 1 and not pump.stops
    esl.api(f"uuid_kill {uuid}")


@needs_native
def test_pause_gives_control_back_and_resume_takes_it_again(esl, daemon, peer):
    uuid = originate(esl)
    conn = start(daemon, peer, uuid)
    pump = the_pump(daemon, uuid)
    assert wait_until(lambda: pump.armed, 2)
    assert daemon.execute(f"{uuid} pause") == "+OK Success\n"
    assert not pump.armed
    paused_at = len(conn.binary)
    gevent.sleep(0.3)
    assert len(conn.binary) <= paused_at + 1  # nothing goes out while paused
    assert daemon.execute(f"{uuid} resume") == "+OK Success\n"
    assert wait_until(lambda: pump.armed, 2) and pump.arms == 2
    assert wait_until(lambda: len(conn.binary) >= paused_at + 10, 3)
    esl.api(f"uuid_kill {uuid}")


@needs_native
def test_the_endpoints_audio_is_paced_in_python_and_then_the_pump_goes_on(esl, daemon, peer,
                                                                         sim):
    uuid = originate(esl, ext="3000", rate=8000)
    conn = start(daemon, peer, uuid, rate="8k")
    pump = the_pump(daemon, uuid)
    assert wait_until(lambda: pump.armed, 2)
    peer.send_text(conn, stream_audio(tone(500, 0.4, 8000), 8000))
    assert wait_until(lambda: not pump.armed, 2)
    assert wait_until(lambda: len(sim.channel(uuid).written) == 6400, 3)  # every frame paced
    assert wait_until(lambda: pump.armed, 2)  # played out: C carries the frames again
    before = len(conn.binary)
    peer.send_text(conn, stream_audio(tone(700, 0.2, 8000), 8000))  # and again
    assert wait_until(lambda: len(sim.channel(uuid).written) == 6400 + 3200, 3)
    assert wait_until(lambda: pump.armed and len(conn.binary) >= before + 30, 3)
    assert pump.arms >= 3
    esl.api(f"uuid_kill {uuid}")


@needs_native
def test_a_dropped_connection_is_the_pythons_and_the_reconnection_the_pumps(esl, daemon):
    from wspeer import WSPeer

    first = WSPeer().start()
    uuid = originate(esl)
    conn = start(daemon, first, uuid)
    pump = the_pump(daemon, uuid)
    assert wait_until(lambda: pump.armed, 2)
    port = first.port
    first.kill()  # no close frame: 1006, the stream reconnects
    stream = daemon.streams[uuid]
    assert wait_until(lambda: stream.state == "reconnecting", 3)
    assert not pump.armed
    second = WSPeer(port=port).start()
    try:
        again = second.wait_connection(1, timeout=10)
        assert wait_until(lambda: pump.armed and len(again.binary) > 20, 5)
        assert {len(m) for m in again.binary} == {640} and pump.arms >= 2
        assert len(conn.binary) + len(again.binary) <= stream.frames_out
    finally:
        second.stop()
    esl.api(f"uuid_kill {uuid}")


@pytest.mark.parametrize("native", [False])
def test_native_off_streams_on_the_python_path(esl, daemon, peer, native):
    uuid = originate(esl)
    conn = start(daemon, peer, uuid)
    assert the_pump(daemon, uuid) is None
    assert wait_until(lambda: len(conn.binary) >= 20, 3)
    esl.api(f"uuid_kill {uuid}")


def test_without_the_extension_streams_are_the_python_paths(esl, daemon, peer, monkeypatch):
    monkeypatch.setattr(native_pump, "AVAILABLE", False)
    uuid = originate(esl)
    conn = start(daemon, peer, uuid)
    assert the_pump(daemon, uuid) is None
    assert wait_until(lambda: len(conn.binary) >= 20, 3)
    esl.api(f"uuid_kill {uuid}")


def test_what_the_pump_may_not_carry_has_no_native_target():
    """TLS (wss://) and compressed audio stay on the Python path: the connection does not
    hand the pump its socket."""
    ours, theirs = gsocket.socketpair()

    def outgoing(secure: bool, compress_binary: bool) -> Outgoing:
        return Outgoing(ours, secure=secure, frames=writer, compress_binary=compress_binary,
                        on_blocked=None, on_error=lambda err: None)

    writer = FrameWriter()
    try:
        plain = outgoing(False, False)
        assert plain.native_target() == (ours.fileno(), writer)
        assert outgoing(True, False).native_target() is None
        assert outgoing(False, True).native_target() is None
        plain.close()
        assert plain.native_target() is None  # a closed connection is nobody's
    finally:
        ours.close()
        theirs.close()


@needs_native
@pytest.mark.parametrize(("url", "mix", "rate", "encoded", "carried"), [
    ("ws://x/", "mono", 16000, False, True),
    ("WS://x/", "mono", 8000, False, True),
    ("wss://x/", "mono", 16000, False, False),  # TLS: Python's ssl does the sending
    ("ws://x/", "stereo", 16000, False, False),  # paired frames: the Python path's
    ("ws://x/", "mono", 11025, False, False),  # chunk sizes alternate
    ("ws://x/", "mono", 8000, True, False),  # a protocol encodes the audio (G.711, Twilio)
])
def test_which_streams_a_pump_may_carry(url, mix, rate, encoded, carried):
    pipe = FramePipeline(mix=mix, stream_rate=rate, buffer_ms=20,
                         pairing="none" if mix == "mono" else "clock", now=lambda: 0.0)
    link = Link(url, uuid="u", fire=lambda s, b: None, on_text=lambda t: None,
                on_binary=lambda b: None, on_gone=lambda c, r: None, metadata=None,
                reconnect=False, backlog_bytes=1 << 16)
    pipe.out = link if not encoded else Encoded(link)
    pump = native_pump.carrier(pipe, link)
    assert (pump is not None) == carried
    if pump is not None:
        assert pipe.native is pump and link.on_state is not None
        pump.close()
        assert pipe.native is None and link.on_state is None


class Encoded:
    def __init__(self, link: Link) -> None:
        self.link = link

    def send(self, chunk: bytes) -> bool:
        return self.link.send(chunk[::2])


@needs_native
def test_a_second_stream_on_the_call_retires_the_pump_and_both_get_every_frame(esl, daemon,
                                                                               peer):
    """A pump carries the call's one stream; when another joins, the call's frames go through
    the fan-out (Python) for both, and the first loses nothing at the hand-back."""
    uuid = originate(esl)
    first = start(daemon, peer, uuid, path="/first")
    stream = daemon.streams[uuid]
    pump = the_pump(daemon, uuid)
    assert wait_until(lambda: pump.armed, 2)
    assert daemon.execute(f"{uuid}@second start {peer.url('/second')} mono 16k") == \
        "+OK Success\n"
    second = peer.wait_connection(2)
    assert not pump.armed and stream.pipeline.native is None  # retired, for good
    assert wait_until(lambda: len(second.binary) >= 25, 3)
    gevent.sleep(0.3)
    assert not pump.armed and pump.arms == 1
    assert daemon.execute(f"{uuid} stop") == "+OK Success\n"
    assert wait_until(first.closed.is_set, 5)
    assert len(first.binary) == stream.frames_out  # no frame lost or doubled at the hand-back
    assert {len(m) for m in first.binary} == {640}
    esl.api(f"uuid_kill {uuid}")
