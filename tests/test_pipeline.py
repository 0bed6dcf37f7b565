"""The frame pipeline, sans-IO: frames fed in, chunks read out, no sockets and no greenlets."""

from __future__ import annotations

import time
from array import array

import pytest

from esl_audio_stream.app.stats import LATENCY_BUCKETS, FrameTimer
from esl_audio_stream.call.pipeline import FramePipeline
from esl_audio_stream.dev.analysis import dominant_frequency, tone_amplitude


class Out:
    """Stands in for the link: records every chunk."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def send(self, chunk: bytes) -> bool:
        self.chunks.append(chunk)
        return True


class FakePlayer:
    """Plays `frames` one per slot; records the slots it was asked for."""

    def __init__(self, frames: list[bytes], tag: object = "file-1") -> None:
        self.frames = list(frames)
        self.asked = 0
        self.tag = tag

    @property
    def playing(self) -> bool:
        return bool(self.frames)

    def next_frame(self) -> bytes | None:
        self.asked += 1
        return self.frames.pop(0) if self.frames else None


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def tone_frames(freq: float, n: int, rate: int = 8000, amp: int = 8000) -> list[bytes]:
    import math

    size = rate // 50
    samples = array("h", (int(amp * math.sin(2 * math.pi * freq * i / rate))
                          for i in range(size * n)))
    raw = samples.tobytes()
    return [raw[i * size * 2:(i + 1) * size * 2] for i in range(n)]


def pipeline(mix="mono", rate=8000, buffer_ms=20, pairing=None, **kw) -> tuple[FramePipeline, Out]:
    pairing = pairing or ("none" if mix == "mono" else "clock")
    p = FramePipeline(mix=mix, stream_rate=rate, buffer_ms=buffer_ms, pairing=pairing, **kw)
    out = Out()
    p.out = out
    return p, out


def test_mono_at_the_channel_rate_passes_frames_through_unchanged():
    p, out = pipeline()
    frames = tone_frames(440, 10)
    for f in frames:
        p.feed(f)
    assert out.chunks == frames  # the very bytes FreeSWITCH sent, one message per frame
    assert p.frames_in == p.frames_out == 10 and p.channel_rate == 8000
    assert p.last_frame is frames[-1] and p.bytes_out == 3200


def test_buffer_size_cuts_exact_chunks_and_resampling_keeps_the_tone():
    p, out = pipeline(rate=16000, buffer_ms=100)
    for f in tone_frames(440, 50):
        p.feed(f)
    assert [len(c) for c in out.chunks] == [3200] * 10  # 100 ms at 16 kHz
    audio = b"".join(out.chunks)
    assert dominant_frequency(audio[3200:], 16000) == pytest.approx(440, abs=5)
    assert p.bytes_out == 32000
    p.close()


def test_comfort_noise_becomes_silence_and_garbage_is_counted():
    p, out = pipeline()
    p.feed(b"\xff" * 320)  # CNG, as FreeSWITCH sends it
    p.feed(b"\x01")  # odd length
    p.feed(b"")
    p.feed(b"\xff\x7f" * 160)  # real audio that starts with 0xFF
    assert out.chunks == [bytes(320), b"\xff\x7f" * 160]
    assert p.malformed == 2 and p.frames_in == 2


def test_pause_sends_nothing_but_the_playback_goes_on_and_resume_starts_fresh():
    p, out = pipeline(buffer_ms=40)
    player = FakePlayer([b"\x01\x00" * 160] * 5)
    p.pace(player)
    frames = tone_frames(440, 8)
    p.feed(frames[0])  # half a chunk waits in the chunker
    p.pause()
    for f in frames[1:4]:
        p.feed(f)
    assert out.chunks == [] and player.asked == 4  # paused: the player still got its slots
    p.resume()
    for f in frames[4:8]:
        p.feed(f)
    assert out.chunks == [frames[4] + frames[5], frames[6] + frames[7]]  # nothing from before


def test_direct_stereo_pairs_each_caller_frame_with_what_plays_in_its_slot():
    now = Clock()
    p, out = pipeline(mix="stereo", now=now)
    played = [b"\x10\x00" * 160, b"\x20\x00" * 160]
    p.pace(FakePlayer(played))
    caller = [b"\x01\x00" * 160] * 4
    for f in caller:
        p.feed(f)
        now.t += 0.020
    left = [array("h", c)[0::2] for c in out.chunks]
    right = [array("h", c)[1::2] for c in out.chunks]
    assert all(set(x) == {1} for x in left)
    assert [set(x) for x in right] == [{16}, {32}, {0}, {0}]


def test_direct_mixed_puts_a_lost_frame_back_as_silence_in_its_slot():
    now = Clock()
    p, out = pipeline(mix="mixed", now=now)
    p.pace(FakePlayer([b"\x05\x00" * 160] * 100))
    for i in range(60):
        if i != 40:  # this datagram never came: the clock sees the hole at the next ones
            p.feed(b"\x01\x00" * 160)
        now.t += 0.020
    levels = [set(array("h", c)) for c in out.chunks]
    # the lost frame's slot is the played audio alone, in its place; the others are both
    assert [i for i, lv in enumerate(levels) if lv == {5}] == [40]
    assert all(lv == {6} for i, lv in enumerate(levels) if i != 40)
    assert len(levels) >= 59  # at most the last frame is still held, its slot undecided


def test_taps_add_what_plays_to_the_write_side_unless_freeswitch_has_it():
    p, out = pipeline(mix="stereo", pairing="taps")
    player = FakePlayer([b"\x03\x00" * 160] * 4, tag="displaced")
    p.pace(player)
    for _ in range(2):
        p.feed(b"\x01\x00" * 160)
        p.feed_write(b"\x02\x00" * 160)
    assert [set(array("h", c)[1::2]) for c in out.chunks] == [{5}, {5}]  # 2 + 3: added once
    p.pace(player, in_tap={"displaced"})  # a displace that was playing when the taps were made
    p.feed(b"\x01\x00" * 160)
    p.feed_write(b"\x02\x00" * 160)
    assert set(array("h", out.chunks[-1])[1::2]) == {2}  # FreeSWITCH has it: not added again
    assert set(array("h", out.chunks[-1])[0::2]) == {1}


def test_taps_mixed_at_16k_keeps_both_tones():
    p, out = pipeline(mix="mixed", rate=16000, pairing="taps")
    for r, w in zip(tone_frames(440, 50), tone_frames(1000, 50), strict=True):
        p.feed(r)
        p.feed_write(w)
    audio = b"".join(out.chunks)[6400:]
    assert tone_amplitude(audio, 440, 16000) > 4000 and tone_amplitude(audio, 1000, 16000) > 4000
    p.close()


def test_one_frame_in_64_is_timed_with_the_clock_it_was_handed():
    ticks = iter(range(1000))
    observed: list[float] = []

    class Timer:
        def observe(self, seconds: float) -> None:
            observed.append(seconds)

    p, _ = pipeline(clock=lambda: float(next(ticks)), timer=Timer())
    for f in tone_frames(440, 130):
        p.feed(f)
    assert observed == [1.0, 1.0]  # frames 64 and 128, one clock tick each


def test_a_timed_frame_read_from_a_socket_has_its_latency_from_the_arrival_stamp():
    """`arrival` says when the datagram being fed reached the host (None outside a socket
    reader's callback: a FIFO's frames have no stamp): a timed frame's latency runs from it to
    the wall clock once the chunk went out."""
    latency, timed = FrameTimer(LATENCY_BUCKETS), FrameTimer()
    stamps: list[float | None] = [time.time() - 0.003, None]
    p, out = pipeline(clock=time.perf_counter, timer=timed, arrival=lambda: stamps[0],
                      latency=latency)
    for f in tone_frames(440, 64):
        p.feed(f)
    assert timed.count == latency.count == 1
    assert 0.003 <= latency.sum < 1.0
    stamps[0] = None  # no stamp: timed, and no latency
    for f in tone_frames(440, 64):
        p.feed(f)
    assert (timed.count, latency.count) == (2, 1) and len(out.chunks) == 128
    # no `arrival` at all: no latency is kept
    q, _ = pipeline(clock=time.perf_counter, timer=FrameTimer(), latency=latency)
    for f in tone_frames(440, 64):
        q.feed(f)
    assert latency.count == 1


def test_a_shape_that_cannot_pair_is_refused():
    with pytest.raises(ValueError):
        FramePipeline(mix="stereo", stream_rate=8000, buffer_ms=20, pairing="none")
    with pytest.raises(ValueError):
        FramePipeline(mix="mixed", stream_rate=8000, buffer_ms=20, pairing="clock")  # no now
