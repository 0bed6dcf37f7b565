"""TapAligner: two taps' frames paired by count, a stalled side filled, a drifting or lossy side
resynchronised by a cross-faded drop, never a click (sans-IO: frames in, pairs out)."""

from __future__ import annotations

import functools
import math
import random
from array import array

import pytest

from esl_audio_stream.media.align import READ, WRITE, TapAligner, crossfade

FB = 320


def frame(side: int, n: int) -> bytes:
    """A frame that says which side and which frame it is (first sample) — for pairing checks."""
    return array("h", [1 + side * 10000 + n % 9999] * (FB // 2)).tobytes()


def ident(f: bytes) -> tuple[int, int] | None:
    v = array("h", f)[0]
    return None if f == bytes(FB) else divmod(v - 1, 10000)


def drain(al: TapAligner) -> list[tuple[bytes, bytes]]:
    out = []
    while (p := al.pop()) is not None:
        out.append(p)
    return out


def test_pairs_by_count_whatever_the_interleaving():
    al = TapAligner(FB)
    rng = random.Random(7)
    out = []
    r = w = 0
    for _ in range(2000):  # random arrival order, skew within a few frames
        if (rng.random() < 0.5 and r - w < 3) or w - r >= 3:
            al.push(READ, frame(0, r))
            r += 1
        else:
            al.push(WRITE, frame(1, w))
            w += 1
        out += drain(al)
    assert all(ident(a)[1] == ident(b)[1] for a, b in out)
    assert [ident(a)[1] for a, _ in out] == list(range(len(out)))
    assert al.filled == al.dropped == al.resyncs == 0


def test_a_stalled_side_is_filled_and_its_late_frames_dropped():
    al = TapAligner(FB, max_skew=10)
    out = []
    for n in range(20):
        al.push(READ, frame(0, n))
        al.push(WRITE, frame(1, n))
        out += drain(al)
    for n in range(20, 60):  # the write tap stalls for 40 frames
        al.push(READ, frame(0, n))
        out += drain(al)
    for n in range(20, 80):  # then its backlog arrives, and it goes on
        al.push(WRITE, frame(1, n))
        if n >= 60:
            al.push(READ, frame(0, n))
        out += drain(al)
    reads = [ident(a)[1] for a, _ in out]
    assert reads == list(range(len(reads)))  # the read side never skipped or repeated
    for a, b in out:  # every pair is aligned or has silence for the stalled side
        assert ident(b) is None or ident(b)[1] == ident(a)[1]
    assert al.filled == al.dropped > 0


@functools.cache
def _tone(n: int, freq: float) -> bytes:
    k = FB // 2
    return array("h", (int(8000 * math.sin(2 * math.pi * freq * (n * k + i) / 8000))
                       for i in range(k))).tobytes()


def tone(side: int, n: int, freq: float) -> bytes:
    """Frame n of a continuous tone (440 Hz repeats every 5 frames of 160 samples)."""
    return _tone(n % 5 if freq == 440 else n, freq)


def max_step(pcm: bytes) -> int:
    a = array("h", pcm)
    return max(abs(a[i + 1] - a[i]) for i in range(len(a) - 1))


@pytest.mark.parametrize("ppm", [200, 1000])
def test_a_drifting_side_stays_within_a_frame_and_resyncs_without_clicks(ppm):
    """The write tap sends `ppm` more frames than the read tap (a faster clock) for the
    equivalent of an hour at 1000 ppm (bounded: 60,000 read frames)."""
    al = TapAligner(FB)
    out_w = []
    owed = 0.0
    w = 0
    for n in range(60000 if ppm == 1000 else 20000):
        al.push(READ, frame(0, n))
        owed += 1 + ppm / 1e6
        while owed >= 1:
            al.push(WRITE, tone(1, w, 440))
            w += 1
            owed -= 1
        while (p := al.pop()) is not None:
            out_w.append(p[1])
        assert max(al.waiting) <= 3  # never drifts apart
    assert al.resyncs >= int(len(out_w) * ppm / 1e6) - 2
    assert al.filled == 0
    # the splices are inaudible: no sample step larger than the tone's own steepest one,
    # where a plain drop of 20 ms would make one up to twice the amplitude
    steepest = max_step(tone(1, 0, 440) + tone(1, 1, 440))
    joined = b"".join(out_w)
    assert max_step(joined) <= steepest * 1.05


def test_crossfade_ends_on_the_new_frame():
    old, new = tone(0, 0, 440), tone(0, 7, 440)
    x = array("h", crossfade(old, new))
    assert x[-1] == array("h", new)[-1]
    assert abs(x[0] - array("h", old)[0]) <= 60
    assert TapAligner(FB).pop() is None
    with pytest.raises(ValueError):
        TapAligner(321)
