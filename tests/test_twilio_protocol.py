"""Twilio Media Streams, sans-IO: the protocol fed chunks (through the real frame pipeline) and
messages, read for what goes on the wire. No sockets, a clock the test turns."""

from __future__ import annotations

import base64
import json
import time

import pytest
from helpers.audio import tone
from helpers.twilio import (
    check_connected,
    check_dtmf,
    check_mark,
    check_numbering,
    check_start,
    check_stop,
    media_message,
    media_of,
)

from esl_audio_stream.app.settings import SettingsError, StreamSettings
from esl_audio_stream.call.pipeline import FramePipeline
from esl_audio_stream.dev.analysis import dominant_frequency
from esl_audio_stream.media.pcm import audioop
from esl_audio_stream.protocols import choose
from esl_audio_stream.protocols.actions import Clear, Mark, Play, Refuse, Relay
from esl_audio_stream.protocols.twilio import SEQ_SLACK, TwilioMediaStreams, custom_parameters

CALL = "6f1c2a4e-0000-4000-8000-000000000001"
ACCOUNT = "AC" + "0" * 32


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.wall = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t

    def epoch(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.wall += seconds


class WireLink:
    """What the protocol sends through: everything as the endpoint would get it, in order."""

    def __init__(self) -> None:
        self.wire: list[str] = []

    def send(self, data: bytes) -> bool:
        self.wire.append(data.decode())
        return True

    def send_text(self, text: str) -> bool:
        self.wire.append(text)
        return True


def make(mix: str = "mono", metadata: str | None = None, buffer_ms: int = 20,
         clock: Clock | None = None, **kw) -> tuple[TwilioMediaStreams, WireLink, Clock]:
    clock = clock or Clock()
    proto = TwilioMediaStreams(call_sid=CALL, account_sid=ACCOUNT, metadata=metadata, mix=mix,
                               buffer_ms=buffer_ms, clock=clock, epoch=clock.epoch,
                               started=clock.wall, **kw)
    link = WireLink()
    link.wire.extend(proto.greeting())
    return proto, link, clock


def pipeline(proto: TwilioMediaStreams, link: WireLink, mix: str = "mono",
             buffer_ms: int = 20) -> FramePipeline:
    p = FramePipeline(mix=mix, stream_rate=8000, buffer_ms=buffer_ms,
                      pairing="none" if mix == "mono" else "taps", channel_rate=8000)
    p.out = proto.audio_out(link)
    return p


def test_the_greeting_is_connected_then_start_with_every_field() -> None:
    proto, link, _ = make(metadata='{"caller":"alice","lang":"fr"}')
    check_connected(link.wire[0])
    sid = check_start(link.wire[1], call_sid=CALL, tracks=["inbound"],
                      custom={"caller": "alice", "lang": "fr"}, account_sid=ACCOUNT)
    assert sid == proto.stream_sid
    stereo, wire, _ = make(mix="stereo")
    check_start(wire.wire[1], call_sid=CALL, tracks=["inbound", "outbound"], custom={},
                account_sid=ACCOUNT)
    assert stereo.stream_sid != sid  # new per stream
    assert proto.greeting() == link.wire[:2]  # every connection: the same two


@pytest.mark.parametrize(("metadata", "custom"), [
    (None, {}), ("", {}), ('{"a":"1"}', {"a": "1"}), ("plain text", {"metadata": "plain text"}),
    ('{"a":1}', {"metadata": '{"a":1}'}), ('["a"]', {"metadata": '["a"]'}),
])
def test_custom_parameters(metadata, custom) -> None:
    assert custom_parameters(metadata) == custom


def test_ten_minutes_of_frames_numbered_without_drift() -> None:
    """30,000 frames (10 minutes) through the real pipeline: one media message per frame, chunk
    from 1, timestamp 20 ms more each, sequenceNumber one more each; µ-law of what came in."""
    proto, link, clock = make()
    pipe = pipeline(proto, link)
    clock.advance(0.037)  # the first frame comes a little after the start
    frame = tone(440, 0.02, 8000)
    for _ in range(30_000):
        pipe.feed(frame)
        clock.advance(0.0201)  # a clock that runs a little fast changes nothing
    medias = media_of(link.wire[2:], proto.stream_sid)
    assert len(medias) == 30_000
    check_numbering(medias, ["inbound"])
    assert medias[0].timestamp == 37 and medias[-1].timestamp == 37 + 20 * 29_999
    assert [m.seq for m in medias] == list(range(2, 30_002))
    assert medias[5].law == audioop.lin2ulaw(frame, 2)


def test_a_longer_buffer_puts_that_many_ms_in_each_message() -> None:
    proto, link, _ = make(buffer_ms=100)
    pipe = pipeline(proto, link, buffer_ms=100)
    for _ in range(50):
        pipe.feed(tone(440, 0.02, 8000))
    medias = media_of(link.wire[2:], proto.stream_sid, ms=100)
    assert len(medias) == 10
    check_numbering(medias, ["inbound"], ms=100)


def test_stereo_splits_the_tracks_and_numbers_each_from_one() -> None:
    proto, link, _ = make(mix="stereo")
    pipe = pipeline(proto, link, mix="stereo")
    caller, heard = tone(440, 1.0, 8000), tone(1000, 1.0, 8000)
    for i in range(0, len(caller), 320):
        pipe.feed(caller[i:i + 320])
        pipe.feed_write(heard[i:i + 320])
    medias = media_of(link.wire[2:], proto.stream_sid)
    check_numbering(medias, ["inbound", "outbound"])
    inbound = b"".join(m.pcm for m in medias if m.track == "inbound")
    outbound = b"".join(m.pcm for m in medias if m.track == "outbound")
    assert abs(dominant_frequency(inbound, 8000) - 440) <= 5
    assert abs(dominant_frequency(outbound, 8000) - 1000) <= 5
    assert [m.track for m in medias[:4]] == ["inbound", "outbound"] * 2
    assert [m.seq for m in medias] == list(range(2, len(medias) + 2))


def test_after_a_pause_the_timestamp_is_the_present_and_chunks_go_on() -> None:
    proto, link, clock = make()
    pipe = pipeline(proto, link)
    frame = bytes(320)
    for _ in range(10):
        pipe.feed(frame)
        clock.advance(0.02)
    pipe.pause()
    for _ in range(100):  # two seconds paused: nothing goes out
        pipe.feed(frame)
        clock.advance(0.02)
    n = len(link.wire)
    pipe.resume()
    proto.resume()
    for _ in range(5):
        pipe.feed(frame)
        clock.advance(0.02)
    medias = media_of(link.wire[2:], proto.stream_sid)
    assert len(link.wire) == n + 5 and len(medias) == 15
    assert [m.chunk for m in medias] == list(range(1, 16))
    assert medias[9].timestamp == 180 and medias[10].timestamp == 2200
    assert [m.timestamp for m in medias[10:]] == [2200, 2220, 2240, 2260, 2280]


def test_marks_keys_and_stop_are_numbered_in_order_with_the_media() -> None:
    proto, link, _ = make()
    pipe = pipeline(proto, link)
    pipe.feed(bytes(320))
    link.send_text(proto.mark_reply("m1", "playout"))
    link.send_text(proto.dtmf("5", 250))  # type: ignore[arg-type]
    pipe.feed(bytes(320))
    link.wire.extend(proto.goodbye("bye"))
    sid = proto.stream_sid
    assert check_mark(link.wire[3], sid) == (3, "m1")
    assert check_mark(proto.mark_reply("m2", "cleared"), sid)[1] == "m2"  # the same echo
    assert check_dtmf(link.wire[4], sid) == (4, "5")
    assert link.wire[6] == "bye"  # a stop's text, as it is, then Twilio's stop
    assert check_stop(link.wire[7], sid, CALL, ACCOUNT) == 6


def test_what_the_endpoint_sends() -> None:
    proto, _, _ = make()
    sid = proto.stream_sid
    pcm = tone(440, 2.5, 8000)  # seconds in one message: fine
    action = proto.on_text(media_message(sid, pcm))
    assert isinstance(action, Play) and action.chunk.rate == 8000
    assert action.chunk.pcm == audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2)
    assert not action.announce  # no play event per media message
    no_sid = json.dumps({"event": "media", "media": {"payload": base64.b64encode(b"\xff" * 160)
                                                     .decode()}})
    assert isinstance(proto.on_text(no_sid), Play)
    mark = json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "x"}})
    assert proto.on_text(mark) == (Relay(mark), Mark("x"))
    clear = json.dumps({"event": "clear", "streamSid": sid})
    assert proto.on_text(clear) == (Relay(clear), Clear())
    other = json.dumps({"event": "something", "streamSid": sid, "x": 1})
    assert proto.on_text(other) == Relay(other)
    for bad in ("not json", "[1,2]", '{"no":"event"}'):
        relay, refuse = proto.on_text(bad)  # type: ignore[misc]
        assert relay == Relay(bad) and isinstance(refuse, Refuse)
    assert isinstance(proto.on_binary(b"\x00" * 320), Refuse)
    for bad_media in ({"event": "media", "streamSid": sid, "media": {}},
                      {"event": "media", "streamSid": sid, "media": {"payload": "%%%"}},
                      {"event": "media", "streamSid": "MZ" + "1" * 32,
                       "media": {"payload": "AAAA"}}):
        action = proto.on_text(json.dumps(bad_media))
        assert isinstance(action, Refuse), bad_media  # media is never relayed
    relay, refuse = proto.on_text(json.dumps({"event": "mark", "streamSid": sid, "mark": {}}))
    assert isinstance(relay, Relay) and isinstance(refuse, Refuse)


def test_a_carried_on_stream_keeps_its_sid_and_numbers_on_beyond_the_dead_process() -> None:
    proto, link, clock = make()
    pipe = pipeline(proto, link)
    for _ in range(100):
        pipe.feed(bytes(320))
        clock.advance(0.02)
    extra = json.loads(json.dumps(proto.record_extra()))  # as the record keeps it
    for _ in range(50):  # sent after the record was written, then the process died
        pipe.feed(bytes(320))
        clock.advance(0.02)
    last = media_of(link.wire, proto.stream_sid)[-1]
    clock.advance(1.5)  # no process for a while
    again = TwilioMediaStreams(call_sid=CALL, account_sid=ACCOUNT, metadata=None, mix="mono",
                               buffer_ms=20, clock=clock, epoch=clock.epoch,
                               started=clock.wall - 4.5, resumed=extra)
    assert again.stream_sid == proto.stream_sid
    assert check_start(again.greeting()[1], call_sid=CALL, tracks=["inbound"], custom={},
                       account_sid=ACCOUNT) == proto.stream_sid
    wire = WireLink()
    p2 = pipeline(again, wire)
    p2.feed(bytes(320))
    first = media_of(wire.wire, again.stream_sid)[0]
    assert first.seq > last.seq and first.chunk > last.chunk
    assert first.seq <= last.seq + 2 * (75 + 2) + SEQ_SLACK  # a sensible jump, not a wild one
    assert first.timestamp == 4500  # ms since the stream first started


def test_the_rate_and_encoding_a_twilio_start_accepts() -> None:
    twilio = StreamSettings(protocol="twilio")
    choose.check(twilio, 8000)
    with pytest.raises(SettingsError, match=r"8000 Hz only.*8k, not 16000"):
        choose.check(twilio, 16000)
    with pytest.raises(SettingsError, match="pcma"):
        choose.check(StreamSettings(protocol="twilio", audio_encoding="pcma"), 8000)
    with pytest.raises(SettingsError, match="STREAM_AUDIO_ENCODING=pcmu"):
        choose.check(StreamSettings(audio_encoding="pcmu"), 16000)
    choose.check(StreamSettings(audio_encoding="pcma"), 8000)


def test_per_frame_cost_measured() -> None:
    """Measured, not asserted: what one 20 ms frame costs on its way to the link, per protocol
    (the README's figures come from scripts/bench)."""
    rows = []
    frame = tone(440, 0.02, 8000)
    stereo = audioop.tostereo(frame, 2, 1, 1)
    for label, mix, chunk in (("twilio mono", "mono", frame), ("twilio stereo", "stereo", stereo)):
        proto, link, _ = make(mix=mix)
        out = proto.audio_out(link)
        link.send = lambda data: True  # type: ignore[method-assign]
        n = 50_000
        t0 = time.perf_counter()
        for _ in range(n):
            out.send(chunk)
        rows.append((label, (time.perf_counter() - t0) / n * 1e6))
    ulaw = choose.make("mod_audio_stream", uuid=CALL, metadata=None, rate=8000, mix="mono",
                       settings=StreamSettings(audio_encoding="pcmu"), account_sid=ACCOUNT,
                       max_audio_bytes=1 << 20, started=0.0)
    out = ulaw.audio_out(WireLink())
    out._link.send = lambda data: True  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    for _ in range(50_000):
        out.send(frame)
    rows.append(("mod_audio_stream pcmu", (time.perf_counter() - t0) / 50_000 * 1e6))
    # what the template saves: the same message built the obvious way, a dict through json
    sid, n = "MZ" + "0" * 32, 50_000
    t0 = time.perf_counter()
    for i in range(n):
        json.dumps({"event": "media", "sequenceNumber": str(i + 2), "media": {
            "track": "inbound", "chunk": str(i + 1), "timestamp": str(20 * i),
            "payload": base64.b64encode(audioop.lin2ulaw(frame, 2)).decode()},
            "streamSid": sid}).encode()
    rows.append(("twilio mono as dict+json", (time.perf_counter() - t0) / n * 1e6))
    print("\nper 20 ms frame, on to the link: " + ", ".join(f"{k} {v:.2f} us" for k, v in rows))
    assert all(v > 0 for _, v in rows)


def test_a_twilio_mark_is_answered_when_its_last_frame_has_been_heard(tmp_path) -> None:
    """The player answers a mark a slot after its last frame was handed to FreeSWITCH (that
    frame has then been heard); a clear, a pause's idle or a new mark do not strand it."""
    from esl_audio_stream.call.player import InjectPlayer
    from esl_audio_stream.media.decode import Chunk

    marks: list[tuple[str, str]] = []
    player = InjectPlayer("u", write=lambda f: True, fire=lambda *a: None,
                          send_mark=lambda name, event: marks.append((name, event)),
                          channel_rate=8000, files_dir=tmp_path, marks_when_heard=True)
    pcm = bytes(1600)  # 5 frames
    player.play(Chunk(pcm, 8000, "raw", pcm, {}))
    player.mark("m")
    for _ in range(5):
        player.next_frame()
    assert marks == [] and player.pending_marks == ["m"]  # its last frame plays in this slot
    player.mark("after")  # nothing queued, but the last frame is still being heard
    player.next_frame()
    assert marks == [("m", "playout"), ("after", "playout")] and player.pending_marks == []
    player.play(Chunk(pcm, 8000, "raw", pcm, {}))
    player.mark("x")
    player.play(Chunk(pcm, 8000, "raw", pcm, {}))
    player.mark("y")
    for _ in range(5):
        player.next_frame()
    player.clear()  # x was heard, y was not
    assert marks[2:] == [("x", "playout"), ("y", "cleared")]
    idle: list[bool] = []
    player.play(Chunk(pcm, 8000, "raw", pcm, {}))
    player.mark("z")
    player.when_idle(lambda: idle.append(True))
    for _ in range(5):
        player.next_frame()
    assert idle == [True] and marks[-1] == ("z", "playout")  # no slot may follow a pause
    player.close()
