"""The playback queue: what the daemon plays into a call, one frame per slot, with marks.

The endpoint sends audio in chunks of any length and expects them to play back to back, marks
to be answered when the audio before them has played, and `clear` to stop everything at once
(barge-in). The shell pops one frame per ptime and writes it to the call; this class only
decides which bytes and which marks. It is pure: no clock, no sockets.

Cost: popping a frame from the middle of a chunk is one bytes slice (the frame) and the result
tuple; chunk boundaries, marks and padding take a slower path a few times per chunk.
"""

from __future__ import annotations

from collections import deque

__all__ = ["PlaybackQueue"]

_NO_MARKS: tuple[str, ...] = ()


class PlaybackQueue:
    """Audio to play into the call, frame by frame, with marks, clear and a bound.

    Frames are `frame_bytes` of L16 at the CHANNEL rate (the stream resamples a Chunk to the
    channel rate before pushing). Marks sit between audio and are reached when the audio before
    them has been popped. A chunk that would take the queue over `max_bytes` is refused whole and
    counted in `dropped_chunks` (flood protection): what is already queued, the oldest, is kept,
    so the caller hears a flood's beginning without a hole in it.
    """

    __slots__ = ("_cur", "_fb", "_max", "_off", "_q", "_silence", "dropped_chunks",
                 "queued_bytes", "tag")

    def __init__(self, frame_bytes: int, max_bytes: int) -> None:
        if frame_bytes <= 0 or frame_bytes & 1:
            raise ValueError(f"frame_bytes must be a positive even number, not {frame_bytes}")
        if max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, not {max_bytes}")
        self._fb = frame_bytes
        self._max = max_bytes
        self._silence = bytes(frame_bytes)
        # Entries: (pcm, tag) for audio, str for a mark. The chunk being read out is not in it.
        self._q: deque[tuple[bytes, object] | str] = deque()
        self._cur: bytes | None = None  # chunk being read out, from offset _off
        self._off = 0
        self.queued_bytes = 0  # audio not yet popped (padding not counted)
        self.dropped_chunks = 0  # chunks dropped whole by the bound (not by clear)
        self.tag: object = None  # tag of the chunk the last popped frame ended in

    @property
    def frame_bytes(self) -> int:
        return self._fb

    @property
    def playing(self) -> bool:
        """True while there is audio left to pop."""
        return self.queued_bytes > 0

    def push_audio(self, pcm: bytes | bytearray | memoryview, tag: object = None) -> bool:
        """Queue L16 at the channel rate after everything queued so far; False (and counted)
        when it would take the queue over its bound."""
        n = len(pcm)
        if n & 1:
            raise ValueError("L16 audio of odd length")
        if not n:
            return True
        if self.queued_bytes + n > self._max:
            self.dropped_chunks += 1
            return False
        if type(pcm) is not bytes:
            pcm = bytes(pcm)  # one copy per chunk, so frames can be sliced as bytes
        self._q.append((pcm, tag))
        self.queued_bytes += n
        return True

    def push_mark(self, name: str) -> None:
        """Queue a mark after the audio queued so far."""
        self._q.append(name)

    def pop_frame(self) -> tuple[bytes | None, tuple[str, ...]]:
        """(next frame or None if nothing to play, marks reached by this pop).

        A mark is reached by the pop that returns the last of the audio before it; a mark with
        no audio before it is reached by the next pop. A chunk's tail that does not fill a frame
        is continued by the next chunk, or padded with silence if nothing follows it yet.
        The marks tuple is a shared empty tuple when there are none.
        """
        cur = self._cur
        if cur is not None:
            off = self._off
            end = off + self._fb
            if end < len(cur):  # the common case: a frame from the middle of a chunk
                self._off = end
                self.queued_bytes -= self._fb
                return cur[off:end], _NO_MARKS
        return self._pop_slow()

    def _pop_slow(self) -> tuple[bytes | None, tuple[str, ...]]:
        need = self._fb
        parts: list[bytes] = []
        reached: list[str] = []
        cur = self._cur
        if cur is not None:  # what is left of the current chunk fits in this frame
            parts.append(cur[self._off:] if self._off else cur)
            need -= len(cur) - self._off
            self._cur = None
        q = self._q
        while q:
            entry = q[0]
            if type(entry) is str:  # all audio before it is in this frame or earlier
                reached.append(entry)
                q.popleft()
                continue
            if not need:
                break
            pcm, self.tag = entry
            q.popleft()
            if len(pcm) > need:
                parts.append(pcm[:need])
                self._cur, self._off = pcm, need
                need = 0
                break
            parts.append(pcm)
            need -= len(pcm)
        marks = tuple(reached) if reached else _NO_MARKS
        if not parts:
            self.tag = None
            return None, marks
        self.queued_bytes -= self._fb - need
        if need:
            parts.append(self._silence[:need])  # the queue ran dry mid-frame
        return (parts[0] if len(parts) == 1 else b"".join(parts)), marks

    def marks(self) -> list[str]:
        """The names of the marks not reached yet, in order (not for the per-frame path)."""
        return [e for e in self._q if type(e) is str]

    def clear(self) -> list[str]:
        """Drop all audio and marks (barge-in); returns the names of the dropped marks."""
        names = [e for e in self._q if type(e) is str]
        self._q.clear()
        self._cur = None
        self._off = 0
        self.queued_bytes = 0
        self.tag = None
        return names

    def __len__(self) -> int:
        """Entries waiting (chunks and marks), not counting the chunk being read out."""
        return len(self._q)

    def __repr__(self) -> str:
        return (f"PlaybackQueue(frame_bytes={self._fb}, queued_bytes={self.queued_bytes},"
                f" entries={len(self._q)}, dropped_chunks={self.dropped_chunks})")
