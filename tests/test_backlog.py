"""The one queue between a stream and its WebSocket (call/backlog.py), with no socket: order,
the byte bound on audio, oldest-first drops counted once, texts never dropped."""

from __future__ import annotations

from esl_audio_stream.call.backlog import Backlog


def audio(n: int, size: int = 320) -> bytes:
    return n.to_bytes(2, "big") + bytes(size - 2)


def drain(backlog: Backlog) -> list[bytes | str]:
    out = []
    while backlog:
        out.append(backlog.pop())
    return out


def test_keeps_order_of_audio_and_texts() -> None:
    b = Backlog(10 * 320)
    b.push_audio(audio(0))
    b.push_text("a")
    b.push_audio(audio(1))
    b.push_text("b")
    assert len(b) == 4 and b.audio_bytes == 640 and b.text_bytes == 2 and b.buffered == 642
    assert drain(b) == [audio(0), "a", audio(1), "b"]
    assert b.audio_bytes == 0 and b.text_bytes == 0 and not b


def test_drops_the_oldest_audio_beyond_the_bound_and_counts_it() -> None:
    b = Backlog(3 * 320)
    for n in range(5):
        assert b.push_audio(audio(n)) is True  # taken, whatever it drops
    assert b.audio_bytes == 3 * 320
    assert b.dropped == 2
    assert drain(b) == [audio(2), audio(3), audio(4)]


def test_texts_are_never_dropped_and_keep_their_place() -> None:
    b = Backlog(2 * 320)
    b.push_text("first")
    b.push_audio(audio(0))
    b.push_text("middle")
    for n in range(1, 6):
        b.push_audio(audio(n))
    assert b.dropped == 4
    # the texts stay, in order, ahead of the audio that outlived them
    assert drain(b) == ["first", "middle", audio(4), audio(5)]


def test_a_message_larger_than_the_bound_is_itself_dropped() -> None:
    b = Backlog(100)
    b.push_text("t")
    b.push_audio(bytes(101))
    assert b.dropped == 1 and b.audio_bytes == 0
    assert drain(b) == ["t"]


def test_drops_are_reported_once() -> None:
    b = Backlog(320)
    for n in range(4):
        b.push_audio(audio(n))
    assert b.take_drops() == 3
    assert b.take_drops() == 0
    b.push_audio(audio(9))
    assert b.take_drops() == 1
    assert b.dropped == 4  # the total is kept


def test_push_front_puts_back_what_could_not_be_sent() -> None:
    b = Backlog(3 * 320)
    for n in range(3):
        b.push_audio(audio(n))
    b.push_text("t")
    first = b.pop()
    assert first == audio(0) and b.audio_bytes == 640
    b.push_front(first)  # its connection died on the send
    assert b.audio_bytes == 960 and b.dropped == 0
    assert list(b) == [audio(0), audio(1), audio(2), "t"]
    text = b.pop(), b.pop(), b.pop(), b.pop()
    b.push_front(text[-1])
    assert list(b) == ["t"] and b.text_bytes == 1


def test_clear_lets_everything_go_but_keeps_the_count() -> None:
    b = Backlog(320)
    for n in range(3):
        b.push_audio(audio(n))
    b.push_text("t")
    b.clear()
    assert not b and b.buffered == 0
    assert b.dropped == 2
