"""mono / stereo / mixed framing, and the frame clock that keeps caller and playback aligned.

FreeSWITCH's unicast sends only what the caller says, one bare L16 datagram per ptime, with no
sequence number or timestamp. The daemon plays into the call itself, one frame per slot, so the
two directions line up only if every slot of the caller's timeline is accounted for: a lost
datagram must become one silence frame in its slot, and a late or bunched one must not.

`FrameClock` turns arrival times into slots. `Mixer` turns (caller frame, played frame) into the
output frame. Both are sans-IO: no sockets, no clock reads; the shell hands in `now` (and, for
frames that look late, a function that says when the datagram truly arrived).

Measured per-frame cost at 16 kHz (640-byte frames, Python 3.11, x86-64, a shared and busy
machine: `pytest -s tests/test_mix.py -k cost`): stereo 3.3-5.6 us (two array copies, two
strided C assignments, one `tobytes`; audioop's tostereo+tostereo+add measured ~11 us), mixed
0.9-1.9 us (one `audioop.add`), mono ~0.1 us (the caller's object is returned),
`FrameClock.arrive` 0.6-1.0 us.

Shell protocol (one clock and one mixer per call; `held` is one variable of the shell)::

    k = clock.arrive(now)                  # before emitting anything for this datagram
    for _ in range(k):                     # lost frames: silence in their slots
        emit(mixer.combine(mixer.silence, next_played()))
    if held is not None:                   # the frame held at the previous arrival
        emit(mixer.combine(held, next_played())); held = None
    if clock.holding:                      # a late frame: its slot is decided by the next one
        held = frame
    else:
        emit(mixer.combine(frame, next_played()))

On stop or pause, emit `held` (it is real audio), then `clock.reset()`. A shell that never
holds (ignores `holding`) still gets the exact number of silence frames, one slot late.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

from .pcm import audioop

MIXES = ("mono", "stereo", "mixed")

_add = audioop.add


class FrameClock:
    """Turns datagram arrival times into frame slots.

    The expected time of slot n is `base + n * ptime`: slots advance by exactly one ptime each,
    so nothing accumulates. `base` is the phase of the stream: a running mean of the arrivals'
    lateness over the first 32 on-time frames after an anchor, then an average with weight 1/32.
    That keeps it centred in the jitter (one jittery anchor frame does not bias it) and follows
    a clock-rate difference between FreeSWITCH's host and ours (ppm), which would otherwise grow
    into phantom or missed frames over a long call.

    A frame later than half a slot is ambiguous: either frames before it were lost (the stream
    then stays late by whole slots), or it was delayed -- our loop stalled and the datagrams
    queued in the socket, or the network held them -- and the ones behind it come bunched. The
    clock cannot tell at that arrival, so it marks the frame `holding` and decides at the next:
    if the lateness fell by nearly a slot (a backlog draining, however long) nothing was lost;
    if it stayed, the lateness that appeared at the held frame, rounded to slots, was lost and is
    filled before it. Datagrams lost inside a backlog leave no trace until it has drained; the
    stream then stays late by whole slots, and after three late, level arrivals those are filled
    (a few slots after the true spot). Bunched or early frames never insert anything.

    Holes longer than `max_fill` frames (default 50 = 1 s) are not packet loss: FreeSWITCH
    stopped sending (the channel left park, a broadcast, a pause), and that audio never existed.
    The clock then re-anchors and fills nothing. The daemon's playback is paced by the frames
    received, so nothing was played meanwhile either and the stereo channels stay paired; the
    endpoint sees the audio end to end, as mod_audio_stream sends only what the channel read.
    Filling it would also send up to a second of synthetic silence at once.

    `exact`, when given, is asked for a frame that looks late (and for a timeline's first):
    when that datagram truly arrived (call/reader.py's `arrival`, the kernel's stamp), or None.
    A late read of an on-time datagram -- our own loop stalled, the usual case under load --
    is then no ambiguity at all; only what arrived late is judged as above.

    `drops` as well (call/reader.py's `dropped`: the datagrams the kernel dropped for the
    socket, its buffer full) removes the rest of the ambiguity for a sender on the same host,
    where that is the only way a datagram is lost: a frame that truly came late by k slots
    has the frames the kernel dropped since the last count filled before it (at most k), and
    the rest of its lateness is the sender's own timeline moving -- FreeSWITCH's timer skips
    ahead rather than burst when its thread was held more than a tick (switch_time.c
    `timer_next`: "sync up timer if it's not been called for a while"), and no audio was lost
    then -- so the timeline moves with it (`shifts`) and nothing is filled. Nothing is held.

    Limits (tests/test_mix.py sweeps them): slots are exact -- every frame in its own slot,
    fills exactly where frames were lost -- while jitter stays within about +-0.4 ptime (+-8 ms
    at 20 ms; FreeSWITCH on loopback shows sd 0.03 ms) and a backlog drains faster than about
    twice the jitter per read (with little jitter: one read per 17 ms per call). Beyond that,
    the count of fills stays right in most cases but frames can land a slot off, or a slow
    drain can pass for loss. In the first 32 frames after an anchor the phase rests on few
    samples, so a loss there needs a whole slot of lateness to be filled at once.
    """

    __slots__ = (
        "_base",
        "_count",
        "_drops",
        "_exact",
        "_half",
        "_held",
        "_last",
        "_n",
        "_plateau",
        "_ref",
        "_seen_drops",
        "_spread",
        "filled",
        "holding",
        "max_fill",
        "ptime",
        "reanchors",
        "shifts",
        "slots",
    )

    WARM = 32  # on-time frames averaged plainly before the phase switches to a 1/WARM average
    _SPREAD_DECAY = 1.0 - 1.0 / 512  # the jitter peak estimate forgets over ~10 s

    def __init__(self, ptime: float = 0.020, max_fill: int = 50,
                 exact: Callable[[], float | None] | None = None,
                 drops: Callable[[], int | None] | None = None) -> None:
        if not ptime > 0:
            raise ValueError(f"ptime must be positive, not {ptime}")
        if max_fill < 0:
            raise ValueError(f"max_fill must be >= 0, not {max_fill}")
        self.ptime = ptime
        self.max_fill = max_fill
        self._half = ptime / 2
        self._exact = exact
        self._drops = drops if exact is not None else None
        self.slots = 0  # slots handed out since construction: frames + silence frames
        self.filled = 0  # silence frames asked for since construction
        self.reanchors = 0  # holes longer than max_fill
        self.shifts = 0  # the sender's timeline moved on (stamps and drops known): no fill
        self._spread = 0.0
        self.reset()

    def reset(self) -> None:
        """Forget the anchor (pause/resume): the next arrival starts a new timeline.

        A frame held by the shell must be emitted before calling this.
        """
        self._base = 0.0
        self._n = -1  # -1: not anchored
        self._count = 0
        self._held: float | None = None  # lateness of the frame the shell holds
        self._ref = 0.0  # lateness of the frame before the held one (0 when it was on time)
        self._last = 0.0  # lateness of the last frame given a slot
        self._plateau = 0  # consecutive late, level arrivals
        self._seen_drops = -1  # the socket's drop count at the last look; -1: not known
        self.holding = False

    def arrive(self, now: float) -> int:
        """Record one datagram arriving at `now` (seconds, monotonic).

        Returns the number of silence frames to emit before the frame held at the previous
        arrival (or before this one when nothing is held); 0 normally. Afterwards `holding` says
        whether this frame must wait for the next arrival.
        """
        p = self.ptime
        n = self._n
        exact = self._exact
        if n < 0:  # first frame of a timeline: it defines slot 0
            if exact is not None:
                t = exact()
                if t is not None and t < now:
                    now = t
                if self._drops is not None:
                    d = self._drops()
                    self._seen_drops = d if d is not None else -1
            self._base = now
            self._n = 1
            self._count = 1
            self.slots += 1
            return 0
        late = now - self._base - n * p
        half = self._half
        if late >= half and exact is not None:  # read late; did it come late?
            t = exact()
            if t is not None and t < now:
                late -= now - t
                now = t
            if late >= half and self._held is None and self._seen_drops >= 0:
                d = self._drops()  # type: ignore[misc]
                if d is not None:
                    return self._came_late(now, late, n, d)
        fill = 0
        held = self._held
        if held is not None:
            self._held = None
            self.holding = False
            # jitter moves the lateness by at most twice its peak (plus a margin: the peak
            # estimate lags); a draining backlog lowers it by nearly a slot per frame
            flat = 2 * self._spread + 0.002
            drain = p / 8 if flat < p / 8 else (0.9 * p if flat > 0.9 * p else flat)
            if late <= held - drain:  # a backlog draining: the held frame was only late
                self._plateau = 0
            else:
                least = late if late < held else held
                # while the phase rests on few frames it may be off by up to the jitter: then
                # only a whole slot of lateness counts as loss (later frames confirm the rest)
                need = half if self._count >= self.WARM else p
                jump = least - self._ref  # lateness that appeared at the held frame
                if jump >= need:  # lost right before the held frame
                    fill = int(jump / p + 0.5)
                elif least >= need and -flat < late - held < flat:
                    # late and level: a backlog ended, but losses inside it left the stream
                    # late by whole slots; fill once it has stayed so (placed a little late)
                    self._plateau += 1
                    if self._plateau >= 2:
                        fill = int(least / p + 0.5)
                else:
                    self._plateau = 0
                if fill:
                    self._plateau = 0
                    if fill > self.max_fill:  # a hole, not loss: new timeline from here
                        self._base = now - n * p
                        self._n = n + 1
                        self._count = 1
                        self._last = 0.0
                        self.reanchors += 1
                        self.slots += 1
                        return 0
                    n += fill
                    late -= fill * p
                    held -= fill * p
                    self.filled += fill
                    self.slots += fill
            self._last = held
        self._n = n + 1
        self.slots += 1
        if late >= half:
            last = self._last
            self._ref = last if last >= half else 0.0  # the held frame's predecessor, if late
            self._last = late
            self._held = late
            self.holding = True
            return fill
        self._last = late
        self._plateau = 0
        if held is not None:  # the end of a backlog or loss: not a sample of the jitter
            return fill
        # on time or early after an on-time frame: feed the phase (clamped, so an odd early
        # frame moves it little) and the jitter peak
        if late < -half:
            late = -half
        count = self._count + 1
        self._count = count
        self._base += late / (count if count < self.WARM else self.WARM)
        mag = late if late >= 0 else -late
        self._spread = mag if mag > self._spread else self._spread * self._SPREAD_DECAY
        return fill


    def _came_late(self, now: float, late: float, n: int, dropped: int) -> int:
        """A frame that truly came `late` seconds late, the socket's drop count `dropped`: fill
        what the kernel dropped (up to the lateness), move the timeline for the rest."""
        p = self.ptime
        k = int(late / p + 0.5)
        lost = dropped - self._seen_drops
        fill = k if k < lost else lost
        if k > self.max_fill:  # a hole, not loss: FreeSWITCH stopped sending
            fill = 0
            self._seen_drops = dropped
            self.reanchors += 1
        else:
            if fill < 0:
                fill = 0
            self._seen_drops += fill
            self.filled += fill
            if k > fill:
                self.shifts += 1
        n += fill
        self._base = now - n * p
        self._n = n + 1
        self._last = 0.0
        self._plateau = 0
        self.slots += fill + 1
        return fill


class Mixer:
    """Combines one caller frame and one played frame (same length, L16 at the same rate) into
    the output frame for a mix type.

    `mono` is the caller alone: the caller's object is returned untouched. `stereo` interleaves
    caller (left) and played (right) as L R L R. `mixed` is their saturating sum. `played` None
    is silence. Frames of another length than `frame_bytes` (a short last playback frame, a
    rate change) are cut or zero-padded so the output always has `out_frame_bytes` and the
    channels stay in step; that slow path allocates, the normal one does only what it must.
    Outputs are fresh objects (or shared immutable silence), safe to queue.
    """

    __slots__ = (
        "_out",
        "_out_silence",
        "_right_zero",
        "_stereo",
        "frame_bytes",
        "mix",
        "out_frame_bytes",
        "silence",
    )

    def __init__(self, mix: str, frame_bytes: int) -> None:
        if mix not in MIXES:
            raise ValueError(f"mix must be one of {MIXES}, not {mix!r}")
        if frame_bytes <= 0 or frame_bytes % 2:
            raise ValueError(f"frame_bytes must be a positive even number, not {frame_bytes}")
        self.mix = mix
        self.frame_bytes = frame_bytes
        self._stereo = mix == "stereo"
        self.out_frame_bytes = frame_bytes * 2 if self._stereo else frame_bytes
        self.silence = bytes(frame_bytes)  # the caller frame for a lost slot
        self._out_silence = bytes(self.out_frame_bytes)
        self._out = array("h", self._out_silence)  # reused interleave buffer (stereo)
        self._right_zero = array("h", self.silence)

    def _fit(self, data: bytes) -> bytes:
        fb = self.frame_bytes
        if len(data) > fb:
            return data[:fb]
        return bytes(data) + bytes(fb - len(data))

    def combine(self, caller: bytes, played: bytes | None) -> bytes:
        """The output frame for one slot; `played` None means nothing is playing."""
        if self.mix == "mono":
            return caller
        fb = self.frame_bytes
        if len(caller) != fb:
            caller = self._fit(caller)
        if played is not None and len(played) != fb:
            played = self._fit(played)
        if not self._stereo:  # mixed
            if played is None or played is self.silence:
                return caller
            return _add(caller, played, 2)
        out = self._out
        if played is None:
            if caller is self.silence:
                return self._out_silence
            out[1::2] = self._right_zero
        else:
            out[1::2] = array("h", played)
        out[0::2] = array("h", caller)
        return out.tobytes()
