"""Resampler: exact long-run length (no drift), tone preserved, stateful frame edges, lifecycle."""

from __future__ import annotations

import itertools
import math
from array import array

import pytest

from esl_audio_stream.dev.analysis import dominant_frequency
from esl_audio_stream.media.resample import DEFAULT_QUALITY, Resampler, make_resampler


def tone(freq: float, rate: int, seconds: float, amp: int = 8000, phase: float = 0.0) -> bytes:
    k = 2.0 * math.pi * freq / rate
    n = int(rate * seconds)
    return array("h", (int(amp * math.sin(k * i + phase)) for i in range(n))).tobytes()


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(8000, 16000), (48000, 16000), (44100, 16000), (16000, 8000)]
)
def test_ten_minutes_of_frames_do_not_drift(in_rate: int, out_rate: int) -> None:
    frame = tone(440, in_rate, 0.02)  # one 20 ms frame, fed 30,000 times (10 minutes)
    assert len(frame) == in_rate // 50 * 2
    frames = 30_000
    total_out = 0
    with Resampler(in_rate, out_rate) as rs:
        latency = rs.output_latency
        for _ in range(frames):
            total_out += len(rs.process(frame)) // 2
    expected = round(frames * (in_rate // 50) * out_rate / in_rate)
    assert latency > 0
    assert abs(total_out - expected) <= latency


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (48000, 16000), (16000, 8000)])
def test_every_20ms_frame_gives_one_20ms_frame(in_rate: int, out_rate: int) -> None:
    frame = tone(440, in_rate, 0.02)
    with Resampler(in_rate, out_rate) as rs:
        sizes = {len(rs.process(frame)) for _ in range(200)}
    assert sizes == {out_rate // 50 * 2}


@pytest.mark.parametrize("in_rate", [8000, 16000, 44100, 48000])
def test_tone_frequency_survives(in_rate: int) -> None:
    src = tone(440, in_rate, 2.0)
    rs = make_resampler(in_rate, 16000)
    if rs is None:
        assert in_rate == 16000
        out = src
    else:
        with rs:
            step = in_rate // 25
            out = b"".join(rs.process(src[i : i + step]) for i in range(0, len(src), step))
    assert abs(len(out) / 2 - 32000) <= 64
    assert dominant_frequency(out, 16000) == pytest.approx(440, abs=5)


def test_frame_by_frame_equals_one_go() -> None:
    src = tone(440, 8000, 1.0, phase=0.7)
    with Resampler(8000, 16000) as whole, Resampler(8000, 16000) as framed:
        one_go = whole.process(src)
        pieces = b"".join(framed.process(src[i : i + 320]) for i in range(0, len(src), 320))
    assert len(one_go) == len(pieces) == 32000
    assert pieces == one_go


def test_frame_edges_do_not_click() -> None:
    # A stateless resampler would restart its filter at every frame: a jump every 20 ms.
    src = tone(440, 8000, 0.5)
    with Resampler(8000, 16000) as rs:
        out = array("h")
        for i in range(0, len(src), 320):
            out.frombytes(rs.process(src[i : i + 320]))
    max_step = 2 * math.pi * 440 / 16000 * 8000 * 1.1  # steepest slope of the tone, +10%
    steady = out[200:]
    assert max(abs(b - a) for a, b in itertools.pairwise(steady)) < max_step


def test_odd_sizes_memoryview_and_growth() -> None:
    src = tone(300, 8000, 0.5)
    with Resampler(8000, 16000) as ref, Resampler(8000, 16000) as rs:
        want = ref.process(src)
        parts = [memoryview(src)[:2], bytearray(src[2:6002]), src[6002:]]  # 6000 B: growth
        got = b"".join([rs.process(p) for p in parts])
    assert got == want
    assert len(want) == 2 * len(src)


def test_stereo_interleaved() -> None:
    left = array("h", tone(440, 8000, 1.0))
    right = array("h", tone(1000, 8000, 1.0))
    inter = array("h", [0] * (2 * len(left)))
    inter[0::2] = left
    inter[1::2] = right
    with Resampler(8000, 16000, channels=2) as rs:
        out = array("h", rs.process(inter.tobytes()))
    assert len(out) == 2 * len(inter)
    assert dominant_frequency(out[0::2].tobytes(), 16000) == pytest.approx(440, abs=2)
    assert dominant_frequency(out[1::2].tobytes(), 16000) == pytest.approx(1000, abs=2)


def test_rejects_partial_samples_and_bad_params() -> None:
    with Resampler(8000, 16000, channels=2) as rs:
        with pytest.raises(ValueError):
            rs.process(b"\x00" * 6)
        assert rs.process(b"") == b""
    with pytest.raises(ValueError):
        Resampler(0, 16000)
    with pytest.raises(ValueError):
        Resampler(8000, 16000, quality=11)


def test_close_is_idempotent_and_final() -> None:
    rs = Resampler(8000, 16000)
    assert rs.in_rate == 8000 and rs.out_rate == 16000 and rs.channels == 1
    rs.close()
    rs.close()
    with pytest.raises(RuntimeError):
        rs.process(b"\x00\x00")


def test_make_resampler_passthrough_and_default_quality() -> None:
    assert make_resampler(16000, 16000) is None
    rs = make_resampler(8000, 16000)
    assert isinstance(rs, Resampler)
    rs.close()
    assert DEFAULT_QUALITY == 2  # SWITCH_RESAMPLE_QUALITY, as mod_audio_stream uses


def test_short_output_buffer_path_gives_same_audio() -> None:
    # Defensive path: if speexdsp ever stops before consuming all input, the rest is fed again.
    src = tone(440, 8000, 0.2)
    with Resampler(8000, 16000) as ref, Resampler(8000, 16000) as rs:
        rs._out_cap = 50  # force several C calls per process()
        assert rs.process(src) == ref.process(src)
