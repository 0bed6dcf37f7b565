"""Media bugs on a channel, as switch_core_media_bug keeps them: what sees or changes a channel's
audio each tick besides its own stream -- displaces, eavesdrop taps (recordings would go here).

Bugs are ordered by when they were attached (`SimChannel.bug_seq`): a write-side bug sees a
write-side displace only if the displace was attached first (facts file: media-bug order).
Pure: no I/O, driven by the channel's thread (park.py) and the api commands.
"""

from __future__ import annotations

from ...media.pcm import audioop
from .channel import SimChannel
from .media import Library, Source, load_for_displace

HEARD_KEEP_FRAMES = 25  # write-back kept for taps: a writer far ahead of real time keeps its newest


# -- displace (switch_ivr_displace_session) ---------------------------------------------------
def start_displace(ch: SimChannel, path: str, flags: str) -> bool:
    """Attach a displace of `path`; False when the file cannot be played or already displaces
    (one displace per file path per channel). `m` mixes, `r` goes to the read side."""
    pcm = load_for_displace(path, ch.rate)
    if pcm is None or path in ch.displace:
        return False
    ch.bug_seq += 1  # media-bug order: a write tap attached later does not see it
    ch.displace[path] = [pcm, 0, "m" in flags, "r" in flags, ch.bug_seq]
    return True


def stop_displace(ch: SimChannel, path: str) -> bool:
    return ch.displace.pop(path, None) is not None


def displace_tick(ch: SimChannel, frame: bytes | memoryview) -> bytes | memoryview:
    """switch_ivr_displace_session's media bug: one frame of each displaced file per tick,
    into what the caller hears (write side; `echo` plays it back) or, with `r`, into the
    read side. Ends by itself at the end of the file, firing nothing."""
    fb = len(frame)
    for path, d in list(ch.displace.items()):
        pcm, off, mux, read_side, seq = d
        part = pcm[off:off + fb]
        if len(part) < fb:
            part += bytes(fb - len(part))
        d[1] = off + fb
        if d[1] >= len(pcm):
            del ch.displace[path]
        if read_side:
            frame = audioop.add(frame, part, 2) if mux else part
        else:
            ch.displaced += part
            ch.source.write(part)
            ch.tick_displace.append((seq, part))
    return frame


# -- what the caller hears, for write taps ----------------------------------------------------
def on_write_back(ch: SimChannel, data: bytes) -> None:
    """Write-back audio arrived: kept for the taps to hear; with a write-side displace running
    the call wedges (both injection paths on one call: FreeSWITCH wedges, facts file)."""
    if any(not d[3] for d in ch.displace.values()):
        ch.wedged = True
    if ch.taps:
        acc = ch.write_acc
        acc += data
        if len(acc) > HEARD_KEEP_FRAMES * len(data):
            del acc[: len(acc) - HEARD_KEEP_FRAMES * len(data)]


def take_heard(ch: SimChannel, fb: int) -> bytes | None:
    """One frame (`fb` bytes) of the write-back audio the caller hears this tick, padded with
    silence; None when none came."""
    acc = ch.write_acc
    if not acc:
        return None
    heard = bytes(acc[:fb])
    del acc[:fb]
    return heard + bytes(fb - len(heard)) if len(heard) < fb else heard


# -- eavesdrop taps (native_eavesdrop on a loopback pair) -------------------------------------
class TapSource(Source):
    """A loopback tap's audio (`native_eavesdrop <target> read|write`): what the target read,
    or what it wrote to its caller, in its latest tick. A write tap sees a write-side displace
    only if the displace was attached before the tap (media-bug order, facts file)."""

    __slots__ = ("_silence", "owner", "read_side", "seq", "target")

    def __init__(self, lib: Library, rate: int, target, read_side: bool, seq: int) -> None:
        self.target = target
        self.read_side = read_side
        self.seq = seq
        self.owner = ""  # the tap's A leg, which reads this
        self._silence = lib.silence(rate)

    def next_frame(self) -> memoryview | bytes:
        t = self.target
        if t is None or not t.up:
            return self._silence
        frame = t.last_read if self.read_side else t.last_write
        if frame is None:
            return self._silence
        if not self.read_side:
            for seq, part in t.tick_displace:
                if seq < self.seq:
                    frame = audioop.add(frame, part, 2)
        return frame


def attach_tap(lib: Library, rate: int, target: SimChannel, read_side: bool) -> TapSource:
    target.bug_seq += 1
    source = TapSource(lib, rate, target, read_side, target.bug_seq)
    target.taps.append(source)
    return source


def detach_tap(target: SimChannel, source: Source) -> None:
    target.taps = [t for t in target.taps if t is not source]
