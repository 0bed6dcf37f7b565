"""media/playback: the queue that feeds the call frame by frame, with marks, clear and a bound."""

from __future__ import annotations

import random
import sys
import tracemalloc

import pytest

from esl_audio_stream.media.playback import PlaybackQueue

FB = 320  # 20 ms at 8 kHz


def ramp(n_bytes: int, start: int = 0) -> bytes:
    """Distinct, recognisable 16-bit samples: n_bytes/2 counting up from start."""
    return b"".join(((start + i) & 0x7FFF).to_bytes(2, "little") for i in range(n_bytes // 2))


def drain(q: PlaybackQueue) -> tuple[list[bytes], list[tuple[int, str]]]:
    """Pop until nothing plays; frames, and (index of the pop, mark) for each mark reached."""
    frames, marks = [], []
    for i in range(100000):
        frame, reached = q.pop_frame()
        marks += [(i, m) for m in reached]
        if frame is None:
            return frames, marks
        assert len(frame) == FB
        frames.append(frame)
    raise AssertionError("never ran dry")


def test_empty_queue_plays_nothing():
    q = PlaybackQueue(FB, 1 << 20)
    assert q.pop_frame() == (None, ())
    assert not q.playing and q.queued_bytes == 0


def test_gapless_consecutive_chunks():
    a, b = ramp(1000), ramp(1300, 500)  # neither a multiple of the frame
    q = PlaybackQueue(FB, 1 << 20)
    q.push_audio(a, "A")
    q.push_audio(bytearray(b), "B")
    assert q.playing and q.queued_bytes == 2300
    frames, marks = drain(q)
    out = b"".join(frames)
    assert out[:2300] == a + b  # continues seamlessly: no silence between A and B
    assert out[2300:] == bytes(len(out) - 2300)  # only the very end is padded
    assert len(frames) == -(-2300 // FB) and not marks
    assert q.queued_bytes == 0 and not q.playing


def test_chunk_arriving_after_the_queue_ran_dry_starts_a_new_frame():
    q = PlaybackQueue(FB, 1 << 20)
    q.push_audio(ramp(400))
    f1, _ = q.pop_frame()
    f2, _ = q.pop_frame()  # tail of 80 bytes + 240 of silence
    assert f1 == ramp(400)[:320] and f2 == ramp(400)[320:] + bytes(240)
    assert q.pop_frame() == (None, ())
    q.push_audio(ramp(320, 7))
    assert q.pop_frame() == (ramp(320, 7), ())


def test_marks_order_and_timing():
    q = PlaybackQueue(FB, 1 << 20)
    q.push_mark("m0")  # no audio before it: reached by the first pop
    q.push_audio(ramp(640))  # exactly two frames
    q.push_mark("m1")
    q.push_mark("m2")
    q.push_audio(ramp(500, 1))  # frames 3 (full) and 4 (180 bytes, then C's head)
    q.push_mark("m3")
    q.push_audio(ramp(460, 2))
    q.push_mark("m4")
    frames, marks = drain(q)
    assert [m for _, m in marks] == ["m0", "m1", "m2", "m3", "m4"]
    # m0 on the first pop, m1/m2 with the frame that ends the first chunk, m3 with the frame
    # that holds the last of the second chunk, m4 with the padded last frame.
    assert marks == [(0, "m0"), (1, "m1"), (1, "m2"), (3, "m3"), (4, "m4")]
    assert b"".join(frames)[:1600] == ramp(640) + ramp(500, 1) + ramp(460, 2)
    assert len(frames) == 5


def test_mark_alone_and_marks_after_everything_played():
    q = PlaybackQueue(FB, 1 << 20)
    q.push_audio(ramp(320))
    assert q.pop_frame() == (ramp(320), ())
    q.push_mark("late")  # all audio before it has played already
    assert q.pop_frame() == (None, ("late",))
    assert q.pop_frame() == (None, ())


def test_clear_mid_chunk_drops_audio_and_returns_marks():
    q = PlaybackQueue(FB, 1 << 20)
    q.push_audio(ramp(3200), "A")
    q.push_mark("a")
    q.push_audio(ramp(3200), "B")
    q.push_mark("b")
    frame, _ = q.pop_frame()
    assert frame == ramp(3200)[:320] and q.tag == "A"
    assert q.clear() == ["a", "b"]
    assert q.queued_bytes == 0 and not q.playing and len(q) == 0
    assert q.pop_frame() == (None, ())
    q.push_audio(ramp(320, 9))  # new audio after a clear starts on a frame of its own
    assert q.pop_frame() == (ramp(320, 9), ())


def test_mark_after_cleared_audio():
    q = PlaybackQueue(FB, 1 << 20)
    q.push_audio(ramp(1000))
    q.pop_frame()
    q.clear()
    q.push_mark("after")  # its audio (none since the clear) has played
    q.push_audio(ramp(640))
    q.push_mark("end")
    assert q.pop_frame() == (ramp(640)[:320], ("after",))
    assert q.pop_frame() == (ramp(640)[320:], ("end",))
    assert q.clear() == []


def test_bound_keeps_the_oldest_and_refuses_new_chunks_whole():
    q = PlaybackQueue(FB, 2000)
    assert q.push_audio(ramp(800, 0), "A")
    q.pop_frame()  # A is being read out: 480 left
    assert q.push_audio(ramp(800, 1), "B")
    q.push_mark("after-B")
    # 480 + 800 + 800 = 2080 > 2000: C is refused whole; A and B are kept
    assert not q.push_audio(ramp(800, 2), "C")
    assert q.dropped_chunks == 1 and q.queued_bytes == 1280
    assert q.push_audio(ramp(700, 3), "D")  # fits: 1980
    frames, marks = drain(q)
    played = b"".join(frames)
    assert played[:480] == ramp(800, 0)[320:] and played[480:1280] == ramp(800, 1)
    assert played[1280:1980] == ramp(700, 3) and [m for _, m in marks] == ["after-B"]
    assert not q.push_audio(ramp(2400))  # alone over the bound: refused too
    assert q.dropped_chunks == 2 and q.queued_bytes == 0 and q.pop_frame() == (None, ())


def test_random_sequences_keep_every_byte_in_order():
    rnd = random.Random(6)
    marks_seen = padded = 0
    for _ in range(200):
        q = PlaybackQueue(FB, 1 << 30)
        expect = bytearray()
        out = bytearray()
        pushed, seen = [], []
        for step in range(60):
            r = rnd.random()
            if r < 0.4:
                n = rnd.randrange(0, 1200, 2)
                pcm = ramp(n, step * 37)
                q.push_audio(pcm)
                expect += pcm
            elif r < 0.55:
                name = f"m{step}"
                q.push_mark(name)
                pushed.append((name, len(expect)))
            else:
                frame, marks = q.pop_frame()
                out_before = len(out)
                if frame is not None:
                    assert len(frame) == FB
                    # padding appears only when nothing more was queued
                    real = min(FB, max(0, len(expect) - len(out)))
                    out += frame[:real]
                    assert frame[real:] == bytes(FB - real)
                    if real < FB:
                        padded += 1
                        expect += bytes(FB - real)
                        out += bytes(FB - real)
                seen += [(m, out_before, len(out)) for m in marks]
                assert q.queued_bytes == len(expect) - len(out)
        assert bytes(out) == bytes(expect[:len(out)])
        # marks come once each, in order, with the pop that returns the last audio before them
        assert [m for m, _, _ in seen] == [m for m, _ in pushed][:len(seen)]
        where = dict(pushed)
        for name, out_before, out_after in seen:
            assert out_before <= where[name] <= out_after
        for name, at in pushed[len(seen):]:
            assert at >= len(out), name  # not reached: audio before it still queued
        marks_seen += len(seen)
    assert marks_seen > 500 and padded > 100  # the sequences did exercise both


def test_bad_arguments():
    with pytest.raises(ValueError):
        PlaybackQueue(321, 1000)
    with pytest.raises(ValueError):
        PlaybackQueue(0, 1000)
    q = PlaybackQueue(FB, 1000)
    with pytest.raises(ValueError):
        q.push_audio(b"\x00" * 3)
    q.push_audio(b"")
    assert not q.playing and q.pop_frame() == (None, ())


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython memory accounting")
def test_reading_out_a_chunk_allocates_only_the_frames():
    q = PlaybackQueue(640, 1 << 30)
    q.push_audio(bytes(640 * 3001))
    q.pop_frame()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        kept = [q.pop_frame()[0] for _ in range(3000)]
        now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 3000 frames of 640 bytes are ~2 MB, kept; the peak shows any temporary copy as well
    # (one copy of the 1.9 MB chunk would double it).
    assert len(kept) == 3000 and kept[-1] == bytes(640)
    assert now - base >= 3000 * 640
    assert peak - base <= 3000 * (640 + 80) + 64 * 1024
