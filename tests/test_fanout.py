"""One call's frames fanned out to each of its streams' pipelines, sans-IO (call/fanout.py):
each member gets its own shape of the same audio, the playback's slot is taken once per frame
for all of them, and only the current source's inlet feeds."""

from __future__ import annotations

from array import array

from esl_audio_stream.call.fanout import FanOut
from esl_audio_stream.call.pipeline import FramePipeline
from esl_audio_stream.media.pcm import audioop


class Out:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def send(self, chunk: bytes) -> bool:
        self.chunks.append(chunk)
        return True


class FakePlayer:
    def __init__(self, frames: list[bytes]) -> None:
        self.frames = list(frames)
        self.asked = 0
        self.tag = "file-1"

    @property
    def playing(self) -> bool:
        return bool(self.frames)

    def next_frame(self) -> bytes | None:
        self.asked += 1
        return self.frames.pop(0) if self.frames else None


def member(mix: str, pairing: str, rate: int = 8000) -> tuple[FramePipeline, Out]:
    p = FramePipeline(mix=mix, stream_rate=rate, buffer_ms=20, pairing=pairing)
    p.out = out = Out()
    return p, out


def const(value: int, n: int = 160) -> bytes:
    return array("h", [value] * n).tobytes()


def stereo(left: int, right: int, n: int = 160) -> bytes:
    return audioop.add(audioop.tostereo(const(left, n), 2, 1, 0),
                       audioop.tostereo(const(right, n), 2, 0, 1), 2)


def test_a_stereo_recording_feeds_each_member_its_own_shape():
    fan = FanOut(8000)
    mono, mono_out = member("mono", "none")
    st, st_out = member("stereo", "interleaved")
    mixed, mixed_out = member("mixed", "interleaved")
    for m in (mono, st, mixed):
        fan.add(m)
    inlet = fan.inlet(interleaved=True)
    fan.go_live(inlet)
    for _ in range(3):
        inlet.feed(stereo(1000, 300))
    assert mono_out.chunks == [const(1000)] * 3  # the left side: what the call reads
    assert st_out.chunks == [stereo(1000, 300)] * 3
    assert mixed_out.chunks == [const(1300)] * 3
    assert inlet.channel_rate == 8000 and inlet.stream_rate == 8000


def test_one_member_is_fed_straight_and_write_frames_go_only_to_those_pairing_taps():
    fan = FanOut()
    mono, mono_out = member("mono", "none")
    fan.add(mono)
    inlet = fan.inlet(interleaved=False)
    fan.go_live(inlet)
    assert inlet._feed == mono.feed  # no fan-out for one stream alone
    st, st_out = member("stereo", "taps")
    fan.add(st)
    for _ in range(2):
        inlet.feed(const(500))
        inlet.feed_write(const(200))
    assert mono_out.chunks == [const(500)] * 2 and mono.frames_in == 2
    assert st_out.chunks == [stereo(500, 200)] * 2
    fan.remove(st)
    assert inlet._feed == mono.feed and inlet._feed_write.__name__ == "_drop"


def test_the_playback_slot_is_taken_once_per_frame_and_heard_by_every_stereo_member():
    fan = FanOut(8000)
    a, a_out = member("stereo", "interleaved")
    b, b_out = member("stereo", "interleaved")
    c, c_out = member("mono", "none")
    for m in (a, b, c):
        fan.add(m)
    inlet = fan.inlet(interleaved=True)
    fan.go_live(inlet)
    player = FakePlayer([const(700)] * 2)
    fan.pace(player, ())
    for _ in range(3):
        inlet.feed(stereo(1000, 0))
    assert player.asked == 2  # one frame per slot, not one per member (then it is idle)
    heard = [stereo(1000, 700), stereo(1000, 700), stereo(1000, 0)]
    assert a_out.chunks == heard and b_out.chunks == heard
    assert c_out.chunks == [const(1000)] * 3
    # alone again, the member is paced by the player itself, as a stream alone always was
    fan.remove(b)
    fan.remove(c)
    player.frames = [const(50)]
    inlet.feed(stereo(10, 0))
    assert player.asked == 3 and a_out.chunks[-1] == stereo(10, 50)


def test_only_the_live_inlet_feeds_and_a_rate_set_reaches_every_member():
    fan = FanOut()
    mono, out = member("mono", "none")
    fan.add(mono)
    old = fan.inlet(interleaved=False)
    fan.go_live(old)
    new = fan.inlet(interleaved=True)
    new.feed(stereo(9, 9))  # a source being made: its frames go nowhere yet
    old.feed(const(1))
    new.channel_rate = 16000
    assert mono.channel_rate == 16000 and fan.channel_rate == 16000
    fan.go_live(new)
    old.feed(const(2))  # the replaced source's last frames: dropped
    new.feed(stereo(3, 4, 320))
    assert out.chunks[0] == const(1) and mono.frames_in == 2
    later, _ = member("mono", "none")
    fan.add(later)
    assert later.channel_rate == 16000  # a stream that joins takes the call's rate
