"""The playback strategies, without FreeSWITCH: what they write, when marks are answered."""

from __future__ import annotations

import pytest

from esl_audio_stream.call.player import DisplacePlayer, InjectPlayer
from esl_audio_stream.call.state import TRANSITIONS, StateError, StreamState, advance
from esl_audio_stream.media.decode import Chunk


def chunk(seconds: float, rate: int = 8000) -> Chunk:
    pcm = b"\x01\x00" * int(seconds * rate)
    return Chunk(pcm, rate, "raw", pcm, {})


@pytest.fixture
def inject(tmp_path):
    written, marks, fired = [], [], []
    p = InjectPlayer("u1", write=lambda f: written.append(f) or True,
                     send_mark=lambda name, event: marks.append((name, event)),
                     fire=lambda sub, body: fired.append(sub), channel_rate=8000,
                     files_dir=tmp_path)
    p.written, p.marks, p.fired = written, marks, fired
    yield p
    p.close()


def test_inject_writes_one_frame_per_slot_and_answers_marks_after_their_audio(inject):
    inject.play(chunk(0.1))
    inject.mark("m")
    for _ in range(4):
        inject.next_frame()
    assert len(inject.written) == 4 and inject.marks == []
    inject.next_frame()
    assert len(inject.written) == 5 and inject.marks == [("m", "playout")]
    assert not inject.playing and not inject.files.dir.exists()  # inject writes no file


def test_a_mark_with_nothing_queued_is_answered_at_once(inject):
    inject.mark("alone")
    assert inject.marks == [("alone", "playout")]


def test_clear_answers_pending_marks_cleared_and_when_idle_fires_once(inject):
    inject.play(chunk(0.1))
    idle = []
    inject.when_idle(lambda: idle.append(1))
    inject.mark("a")
    inject.next_frame()
    inject.clear()
    assert inject.marks == [("a", "cleared")] and not inject.playing
    inject.play(chunk(0.04))
    inject.when_idle(lambda: idle.append(2))
    inject.next_frame()
    inject.next_frame()
    assert idle == [2]  # the first was replaced; the second fired when the queue ran dry
    inject.when_idle(lambda: idle.append(3))  # nothing plays: at once
    assert idle == [2, 3]


def test_displace_plays_each_chunk_file_once_when_it_comes_due(tmp_path):
    commands = []
    p = DisplacePlayer("u2", send_mark=lambda *a: None, fire=lambda *a: None,
                       channel_rate=8000, files_dir=tmp_path,
                       api=lambda cmd: commands.append(cmd) or "+OK\n")
    try:
        p.play(chunk(0.04))
        p.play(chunk(0.04))
        for _ in range(5):
            p.next_frame()
        p._jobs.join(timeout=2)
        starts = [c for c in commands if " start " in c]
        assert len(starts) == 2 and starts[0] != starts[1]  # one displace per chunk
        assert p.displacing is None  # ran dry: FreeSWITCH ends a displace by itself
    finally:
        p.close()


def test_the_lifecycle_table_allows_only_its_transitions():
    s = StreamState
    assert advance(s.CONNECTING, s.STREAMING) is s.STREAMING
    assert advance(s.PAUSED, s.STREAMING) is s.STREAMING
    with pytest.raises(StateError):
        advance(s.ENDED, s.STREAMING)
    with pytest.raises(StateError):
        advance(s.STOPPING, s.PAUSED)
    assert all(s.ENDED in TRANSITIONS[x] or s.STOPPING in TRANSITIONS[x] for x in s
               if x is not s.ENDED)  # every live state has a way out
