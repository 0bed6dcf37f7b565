"""Media bugs on a channel, as switch_core_media_bug keeps them: what sees or changes a channel's
audio each tick besides its own stream -- displaces, eavesdrop taps, recordings.

Bugs are ordered by when they were attached (`SimChannel.bug_seq`): a write-side bug sees a
write-side displace only if the displace was attached first (facts file: media-bug order).
Pure but for the recordings' files (record.py writes them); driven by the channel's thread
(park.py) and the api commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...media.pcm import audioop
from .channel import SimChannel
from .media import Library, Source, load_for_displace

if TYPE_CHECKING:
    from .recording import SimRecording

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
    """Write-back audio arrived: kept for the taps and recordings to hear; with a write-side
    displace running the call wedges (both injection paths on one call: FreeSWITCH wedges, facts
    file)."""
    if any(not d[3] for d in ch.displace.values()):
        ch.wedged = True
    if ch.taps or ch.recordings:
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


def heard_by(ch: SimChannel, seq: int) -> bytes | memoryview | None:
    """What the caller heard in the latest tick, as a write-side bug attached `seq`-th sees it:
    write-side displaces attached before it are in it, later ones are not (media-bug order);
    None when nothing was written to the caller."""
    frame = ch.last_write
    for dseq, part in ch.tick_displace:
        if dseq < seq:
            frame = part if frame is None else audioop.add(frame, part, 2)
    return frame


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
        frame = t.last_read if self.read_side else heard_by(t, self.seq)
        return self._silence if frame is None else frame


def attach_tap(lib: Library, rate: int, target: SimChannel, read_side: bool) -> TapSource:
    target.bug_seq += 1
    source = TapSource(lib, rate, target, read_side, target.bug_seq)
    target.taps.append(source)
    return source


def detach_tap(target: SimChannel, source: Source) -> None:
    target.taps = [t for t in target.taps if t is not source]


# -- recordings (switch_ivr_record_session_event's media bug) --------------------------------
def record_frame(ch: SimChannel, rec: SimRecording) -> bytes:
    """What one recording's bug reads this tick (switch_core_media_bug_read): the read side, the
    write side (as heard_by), or both -- interleaved left read / right write when stereo
    (swapped with RECORD_STEREO_SWAP; a side the recording does not take is zeros), else summed.
    A side it takes that had nothing this tick is filled with 0xFF bytes, as FreeSWITCH fills
    it."""
    read = ch.last_read if rec.read else None
    write = heard_by(ch, rec.seq) if rec.write else None
    fb = 2 * ch.rate // 50
    if rec.read and read is None:
        read = b"\xff" * fb
    if rec.write and write is None:
        write = b"\xff" * fb
    if rec.stereo:
        left, right = (write, read) if rec.swap else (read, write)
        out = audioop.tostereo(bytes(left if left is not None else bytes(fb)), 2, 1, 0)
        if right is not None:
            out = audioop.add(out, audioop.tostereo(bytes(right), 2, 0, 1), 2)
        return out
    if read is None or write is None:
        return bytes(read if read is not None else write)  # type: ignore[arg-type]
    return audioop.add(read, write, 2)


def record_tick(ch: SimChannel) -> None:
    """Each recording of the channel takes this tick's frame (its file: record.py)."""
    for rec in ch.recordings.values():
        if rec.open:
            rec.feed(record_frame(ch, rec))

