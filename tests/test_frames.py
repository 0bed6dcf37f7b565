"""Chunker: exact chunks from any push sizes, zero-copy fast path, linear cost, clear."""

from __future__ import annotations

import os
import random

import pytest

from esl_audio_stream.media.frames import Chunker, chunk_bytes_for


def test_chunk_bytes_for() -> None:
    assert chunk_bytes_for(8000, 20) == 320
    assert chunk_bytes_for(16000, 100) == 3200
    assert chunk_bytes_for(44100, 20) == 1764
    assert chunk_bytes_for(16000, 20, channels=2) == 1280
    with pytest.raises(ValueError):
        chunk_bytes_for(11025, 20)  # 220.5 samples
    with pytest.raises(ValueError):
        chunk_bytes_for(8000, 0)


def test_fast_path_hands_back_same_object() -> None:
    ch = Chunker(320)
    frame = os.urandom(320)
    ch.push(frame)
    assert ch.pending == 320
    out = ch.pop()
    assert out is frame
    assert ch.pop() is None
    assert ch.pending == 0


def test_random_sizes_reassemble_exactly() -> None:
    rnd = random.Random(7)
    data = os.urandom(200_000)
    ch = Chunker(640)
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        n = rnd.choice([0, 1, 320, 640, 641, 1000, 5000, rnd.randrange(1, 3000)])
        ch.push(data[pos : pos + n])
        pos += n
        while (c := ch.pop()) is not None:
            out.append(c)
    assert all(len(c) == 640 for c in out)
    whole = len(data) // 640 * 640
    assert b"".join(out) == data[:whole]
    assert ch.pending == len(data) - whole


def test_order_kept_when_fast_chunk_is_followed_by_more() -> None:
    ch = Chunker(4)
    ch.push(b"abcd")  # held without copy
    ch.push(b"ef")
    ch.push(b"ghij")
    assert ch.pending == 10
    assert [ch.pop(), ch.pop(), ch.pop()] == [b"abcd", b"efgh", None]
    assert ch.pending == 2
    ch.push(b"kl")
    assert ch.pop() == b"ijkl"


def test_bytearray_and_memoryview_inputs_are_copied_when_buffered() -> None:
    ch = Chunker(4)
    ba = bytearray(b"xy")
    ch.push(ba)
    ba[:] = b"!!"  # mutating after a buffered push must not change the audio
    ch.push(memoryview(b"zw"))
    assert ch.pop() == b"xyzw"


def test_unbalanced_pushes_stay_linear_and_bounded() -> None:
    # 321 bytes in, 320 out: the buffer empties only every 320 frames (100 kB), so the offset
    # and compaction paths both run.
    ch = Chunker(320)
    frame = bytes(range(256)) + bytes(65)
    sent = bytearray()
    got = bytearray()
    for _ in range(20_000):
        ch.push(frame)
        sent += frame
        while (c := ch.pop()) is not None:
            got += c
        assert len(ch._buf) < 200_000  # compaction keeps the backing store bounded
    assert got == sent[: len(got)]
    assert ch.pending == len(sent) - len(got) == 20_000 % 320


def test_clear_drops_everything() -> None:
    ch = Chunker(8)
    ch.push(b"12345678")
    ch.clear()
    assert ch.pending == 0 and ch.pop() is None
    ch.push(b"123")
    ch.clear()
    ch.push(b"abcdefgh")
    assert ch.pop() == b"abcdefgh"
    with pytest.raises(ValueError):
        Chunker(0)


def test_chunk_pattern_keeps_odd_rates_exact():
    from esl_audio_stream.media.frames import Chunker, chunk_pattern

    assert chunk_pattern(16000, 20) == (640,)
    assert chunk_pattern(44100, 20) == (1764,)
    assert chunk_pattern(11025, 20) == (440, 442)
    assert chunk_pattern(11025, 20, 2) == (880, 884)
    ch = Chunker(chunk_pattern(11025, 20))
    out = []
    for _ in range(100):  # 100 frames of 441 bytes... fed in odd pieces
        ch.push(bytes(441 * 2 + 1)[: 441 * 2])
        while (c := ch.pop()) is not None:
            out.append(len(c))
    assert out[:4] == [440, 442, 440, 442]
    assert sum(out) + ch.pending == 100 * 882
    assert abs(sum(out) / 2 / 11025 - len(out) * 0.020) < 0.0001  # no drift


def test_empty_and_whole_tell_when_push_and_pop_can_be_skipped():
    from esl_audio_stream.media.frames import Chunker

    c = Chunker(640)
    assert c.empty and c.whole == 640
    c.push(bytes(600))
    assert not c.empty
    assert c.pop() is None and not c.empty
    c.push(bytes(680))
    assert c.pop() == bytes(640) and not c.empty  # 640 left
    assert c.pop() == bytes(640) and c.empty
    c.push(bytes(10))
    c.clear()
    assert c.empty
    assert Chunker((440, 442)).whole == -1  # a cycling pattern: never skipped
