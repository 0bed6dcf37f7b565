"""Pairs the frames of two loopback taps (what the caller says, what the caller hears) into
time-aligned (read, write) slots for `stereo` and `mixed` (pure: no clock, no sockets).

The two taps are two FreeSWITCH channels, each sending one datagram per 20 ms on its own; their
frames are paired by count: the n-th read frame with the n-th write frame. Three things can
break that, and each is handled without a click:

- one tap stalls or stops (its channel is busy, or gone): the other side's frames wait at most
  `max_skew` frames, then go out with silence for the missing side, and that side owes those
  slots: as many of its late frames are dropped when they come, so the pairing stays by count;
- one tap lost frames, or its clock runs a little faster than the other's over hours: frames of
  one side are left waiting for good. When the leading side has had at least one frame waiting
  at every pairing for `window` pairings (1 s), one surplus frame is taken out, and the frame
  that follows it is cross-faded from the dropped one into itself over its 20 ms, so the splice
  is inaudible; one frame per window, so a drift of even 1000 ppm is absorbed;
- frames of another length (a rate change) are cut or padded by the Mixer downstream.

Cost per frame: a deque append and, once both sides have one, two pops and a tuple.
"""

from __future__ import annotations

import sys
from array import array
from collections import deque

__all__ = ["TapAligner", "crossfade"]

READ, WRITE = 0, 1


def crossfade(old: bytes, new: bytes) -> bytes:
    """`old` fading out while `new` fades in, linearly over the frame (L16, same length)."""
    a = array("h", old)
    b = array("h", new)
    n = len(b)
    if len(a) != n or n == 0:
        return new
    if sys.byteorder == "big":
        a.byteswap()
        b.byteswap()
    out = array("h", bytes(2 * n))
    for i in range(n):
        out[i] = int(a[i] + (b[i] - a[i]) * (i + 1) / n)
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


class TapAligner:
    """Frames in from either side (`push`), aligned pairs out (`pop`)."""

    __slots__ = ("_debt", "_low", "_pairs", "_q", "dropped", "filled", "max_skew",
                 "resyncs", "silence", "window")

    def __init__(self, frame_bytes: int, max_skew: int = 10, window: int = 50) -> None:
        if frame_bytes <= 0 or frame_bytes & 1:
            raise ValueError(f"frame_bytes must be a positive even number, not {frame_bytes}")
        self.silence = bytes(frame_bytes)
        self.max_skew = max_skew
        self.window = window
        self._q: tuple[deque[bytes], deque[bytes]] = (deque(), deque())
        self._debt = [0, 0]  # slots already sent with silence, per side
        self._low = max_skew + 1  # least surplus of one side at a pairing in this window
        self._pairs = 0  # pairings in this window
        self.filled = 0  # slots sent with silence for a missing side
        self.dropped = 0  # frames that came after their slot had been sent
        self.resyncs = 0  # surplus frames taken out (cross-faded)

    def push(self, side: int, frame: bytes) -> None:
        if self._debt[side]:
            self._debt[side] -= 1
            self.dropped += 1
            return
        self._q[side].append(frame)

    def pop(self) -> tuple[bytes, bytes] | None:
        """The next aligned (read, write) pair, or None until there is one."""
        rq, wq = self._q
        if rq and wq:
            lead = len(rq) - len(wq)  # frames one side has beyond the other
            if lead < 0:
                lead = -lead
            if lead < self._low:
                self._low = lead
            self._pairs += 1
            if self._pairs >= self.window:
                self._end_window()
                rq, wq = self._q
                if not (rq and wq):
                    return self.pop()
            return rq.popleft(), wq.popleft()
        if len(rq) > self.max_skew:  # the write tap is silent: go on without it
            self._debt[WRITE] += 1
            self.filled += 1
            return rq.popleft(), self.silence
        if len(wq) > self.max_skew:
            self._debt[READ] += 1
            self.filled += 1
            return self.silence, wq.popleft()
        return None

    def _end_window(self) -> None:
        """A side that kept a frame waiting at every pairing for a whole window is ahead for
        good: take one frame out of it, cross-fading it into the next."""
        low = self._low
        self._low = self.max_skew + 1
        self._pairs = 0
        if low < 1:
            return
        rq, wq = self._q
        q = rq if len(rq) > len(wq) else wq
        if len(q) >= 2:
            gone = q.popleft()
            q[0] = crossfade(gone, q[0])
            self.resyncs += 1

    def clear(self) -> None:
        """Forget everything (a pause, new taps)."""
        for q in self._q:
            q.clear()
        self._debt = [0, 0]
        self._low = self.max_skew + 1
        self._pairs = 0

    @property
    def waiting(self) -> tuple[int, int]:
        return len(self._q[0]), len(self._q[1])
