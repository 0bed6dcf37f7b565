"""The frame pipeline: one stream's audio, from FreeSWITCH's frames to the endpoint's chunks.

Sans-IO, like media/: fed datagrams (`feed` for the caller's side -- the call's own unicast or
its read tap --, `feed_write` for the write tap), it turns comfort noise into silence, pairs the
two sides of a stereo or mixed stream, mixes, resamples and cuts exact chunks, and hands each
chunk to `out.send`. It also keeps the playback's slots where the frames it is fed pace the
playback (`pace`): one `player.next_frame()` per slot, which writes the frame into the call
(the player's business) and is the frame the caller hears, for the right channel. No sockets,
no greenlets, and no clock reads but those it is handed (`now` for the direct pairing clock,
with `arrival` and `dropped` for when a late-read datagram truly came and what the kernel
dropped; `clock` for the sampled frame time), so it is tested by feeding frames.

How the two sides are paired (`pairing`):
- `none` (mono): the caller's frames alone.
- `clock` (stereo/mixed of the call's own unicast, which carries only the caller): each caller
  frame is paired with what the daemon plays in the same slot; unicast has no sequence numbers,
  so `FrameClock` (media/mix.py) reads arrival times and puts a lost datagram back as one
  silence frame in its slot.
- `taps` (stereo/mixed from a read and a write tap): `TapAligner` (media/align.py) pairs them by
  count; what the daemon plays by displace is added to the write side (the taps were attached
  before the displace, so FreeSWITCH leaves it out of them: facts file), unless FreeSWITCH
  already has it there (`in_tap`: a displace that was playing when the taps were made).
- `interleaved` (stereo/mixed from one stereo recording, call/record_source.py): FreeSWITCH
  already pairs the two sides (left read, right write) in each frame; what the daemon plays by
  displace is added to the right side, on the same terms as with taps; mixed sums the two.

Per-frame cost is the point of this module: `feed` is bound once to the variant the stream's
shape needs, nothing is looked up or allocated per frame that could be done once per call, and
the one-frame-one-chunk case skips the chunker.

A native pump (native/pump.py) may carry the steady state -- mono frames that only go out -- in
C for a while (`native`, armed): it reads the socket, counts and sends, with this pipeline's
resampler and the chunker's pending audio, and it is told before anything changes that state
(`leave`: pause, pace, close) and when it may take it again (`rejoin`: set up, resume). The
counters read whichever has control.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from time import time
from typing import NamedTuple, Protocol

from ..media.align import READ, WRITE, TapAligner
from ..media.frames import PTIME_MS, Chunker, chunk_pattern
from ..media.mix import FrameClock, Mixer
from ..media.pcm import audioop
from ..media.resample import Resampler, make_resampler

_add = audioop.add

PAIRINGS = ("none", "clock", "taps", "interleaved")
_tomono = audioop.tomono
_tostereo = audioop.tostereo


class AudioOut(Protocol):
    """Where chunks go: the link (mod_audio_stream's binary frames) or a protocol's encoder.
    `send` is looked up per chunk: the link swaps it between its live and backlog paths."""

    send: Callable[[bytes], bool]


class Pacer(Protocol):
    """The player, as the pipeline sees it: one frame per slot while it plays (and, for a
    native pump, `on_queued`: told before audio is queued)."""

    @property
    def playing(self) -> bool: ...
    @property
    def tag(self) -> object: ...
    def next_frame(self) -> bytes | None: ...


class FrameTimer(Protocol):
    def observe(self, seconds: float) -> None: ...


class Lent(NamedTuple):
    """What a native pump takes while it carries the steady state (`FramePipeline.lend`)."""

    resampler: Resampler | None  # used in place
    chunker: Chunker  # the pump takes its pending audio
    frames_in: int
    frames_out: int
    malformed: int
    last_frame: bytes
    sample_mask: int  # a frame whose count has none of these bits is timed (-1: none is)
    timer: FrameTimer | None
    latency: FrameTimer | None  # a timed frame's arrival (the kernel's stamp) to its send


class NativePart(Protocol):
    """A native pump carrying the steady state (native/pump.py), as the pipeline sees it."""

    @property
    def armed(self) -> bool: ...
    @property
    def frames_in(self) -> int: ...
    @property
    def frames_out(self) -> int: ...
    @property
    def malformed(self) -> int: ...
    @property
    def last_frame(self) -> bytes: ...
    def leave(self) -> None: ...
    def rejoin(self) -> None: ...


class FramePipeline:
    """One stream's frames in, chunks out (see the module docstring)."""

    def __init__(self, *, mix: str, stream_rate: int, buffer_ms: int, pairing: str,
                 channel_rate: int = 0, now: Callable[[], float] | None = None,
                 clock: Callable[[], float] | None = None, timer: FrameTimer | None = None,
                 sample_mask: int = 63, arrival: Callable[[], float | None] | None = None,
                 dropped: Callable[[], int | None] | None = None,
                 latency: FrameTimer | None = None) -> None:
        if pairing not in PAIRINGS:
            raise ValueError(f"pairing must be one of {PAIRINGS}, not {pairing!r}")
        if (pairing == "none") != (mix == "mono"):
            raise ValueError(f"{mix} needs pairing "
                             f"{'none' if mix == 'mono' else 'clock/taps/interleaved'}")
        if pairing == "clock" and now is None:
            raise ValueError("the clock pairing needs `now`")
        self.mix = mix
        self.stream_rate = stream_rate
        self.buffer_ms = buffer_ms
        self.pairing = pairing
        self.channels = 2 if mix == "stereo" else 1
        #: FreeSWITCH's rate (0: not known yet; then the first frame's length says it).
        self.channel_rate = channel_rate
        #: Where chunks go; set by the stream once its link exists.
        self.out: AudioOut | None = None
        self._frames_in = 0  # caller-side frames fed (the read tap's, with taps)
        self._frames_out = 0  # chunks handed to `out`
        self._malformed = 0  # datagrams that were not L16 frames (empty, odd length)
        #: The last caller frame (held, not copied): the status page's level meter reads it.
        self._last_frame = b""
        #: A native pump that carries the steady state while armed (set by native/pump.py).
        self.native: NativePart | None = None
        self.paused = False
        self._now = now
        self._arrival = arrival  # when a late-read datagram truly came (the clock pairing)
        self._dropped = dropped  # ... and how many the kernel dropped (media/mix.py FrameClock)
        self._clock = clock
        self._timer = timer
        #: A timed frame read from a socket: from the kernel's arrival stamp (`arrival`) to
        #: its chunk handed to the connection -- what the daemon itself adds, queueing included.
        self._latency = latency if arrival is not None else None
        self._mask = sample_mask if clock is not None and timer is not None else -1
        self._player: Pacer | None = None
        self._in_tap: Collection[object] = ()
        self._cng_len = 0
        self._cng = self._silence = b""
        self._resampler = None
        self._resample: Callable[[bytes], bytes] | None = None
        self._chunker: Chunker | None = None
        self._mixer: Mixer | None = None
        self._frame_clock: FrameClock | None = None
        self._aligner: TapAligner | None = None
        self._held: bytes | None = None  # clock pairing: a late frame whose slot is undecided
        self._route: Callable[[bytes], None] = self._first  # what a caller frame goes through

    # -- what status and metrics read (whoever has control counts) ----------------------

    @property
    def frames_in(self) -> int:
        native = self.native
        return native.frames_in if native is not None and native.armed else self._frames_in

    @property
    def frames_out(self) -> int:
        native = self.native
        return native.frames_out if native is not None and native.armed else self._frames_out

    @property
    def malformed(self) -> int:
        native = self.native
        return native.malformed if native is not None and native.armed else self._malformed

    @property
    def last_frame(self) -> bytes:
        native = self.native
        return native.last_frame if native is not None and native.armed else self._last_frame

    # -- the stream's controls (never per frame) ------------------------------------------

    def pace(self, player: Pacer | None, in_tap: Collection[object] = ()) -> None:
        """The frames fed here pace `player` (one slot each) from now on; None: they do not
        (nothing plays, or something else paces it). `in_tap`: tags of what FreeSWITCH already
        puts in the write tap, not to be added again."""
        native = self.native
        if native is not None:
            native.leave()
            if player is not None:
                player.on_queued = native.leave  # type: ignore[attr-defined]
        self._player = player
        self._in_tap = in_tap
        if self._chunker is not None:
            self._route = self._route_for()

    def pause(self) -> None:
        """Nothing goes out while paused; what plays goes on playing, one frame per slot."""
        if self.native is not None:
            self.native.leave()
        self.paused = True
        if self._chunker is not None:
            self._chunker.clear()

    def resume(self) -> None:
        """From the present moment: nothing held back is sent, the resampler forgets the audio
        from before the pause, and the pairing clock starts a new timeline (the pause was not
        a loss to fill)."""
        if self._resampler is not None:
            self._resampler.reset()
        if self._chunker is not None:
            self._chunker.clear()
        self._held = None
        if self._frame_clock is not None:
            self._frame_clock.reset()
        self.paused = False
        if self.native is not None:
            self.native.rejoin()

    def restart_timeline(self) -> None:
        """A hole in FreeSWITCH's stream that is not loss (a broadcast played meanwhile)."""
        self._held = None
        if self._frame_clock is not None:
            self._frame_clock.reset()

    def clear_pairing(self) -> None:
        """New taps: forget what the old ones left unpaired."""
        if self._aligner is not None:
            self._aligner.clear()

    def close(self) -> None:
        """Free the resampler (native memory); the pipeline is not used again."""
        if self.native is not None:
            self.native.leave()
            self.native = None
        if self._resampler is not None:
            self._resampler.close()
            self._resampler = self._resample = None

    @property
    def bytes_out(self) -> int:
        """Bytes of audio handed to `out`, from `frames_out` and the chunk sizes (fixed, or a
        fixed cycle), so the per-frame path counts nothing more."""
        pattern = chunk_pattern(self.stream_rate, self.buffer_ms, self.channels)
        whole, part = divmod(self.frames_out, len(pattern))
        return whole * sum(pattern) + sum(pattern[:part])

    # -- a native pump (native/pump.py) takes the steady state and gives it back ---------------

    @property
    def steady(self) -> bool:
        """Every caller frame now only goes out (`_emit`): set up, mono, not paused, nothing
        playing -- what a native pump can do instead."""
        route = self._route
        if route == self._mono_paced:
            return not self.paused and not self._player.playing  # type: ignore[union-attr]
        return route == self._emit and not self.paused

    def lend(self) -> Lent:
        """What a native pump takes while it carries the steady state (only when `steady`)."""
        return Lent(self._resampler, self._chunker,  # type: ignore[arg-type]
                    self._frames_in, self._frames_out, self._malformed, self._last_frame,
                    self._mask, self._timer, self._latency)

    def take_back(self, frames_in: int, frames_out: int, malformed: int, last_frame: bytes,
                  pending: bytes) -> None:
        """The native pump's counts, last frame and audio not yet sent as a chunk (the
        chunker's again)."""
        self._frames_in, self._frames_out, self._malformed = frames_in, frames_out, malformed
        self._last_frame = last_frame
        if pending:
            self._chunker.push(pending)  # type: ignore[union-attr]

    # -- per frame ----------------------------------------------------------------------------

    def _take(self, data: bytes) -> bytes | None:
        """A datagram as an L16 frame: comfort noise (all 0xFF bytes) becomes silence; not L16
        (empty, odd length) is counted and dropped."""
        n = len(data)
        if n & 1 or not n:
            self._malformed += 1
            return None
        if data[0] == 0xFF:
            if n != self._cng_len:
                self._cng_len, self._cng, self._silence = n, b"\xff" * n, bytes(n)
            if data == self._cng:
                return self._silence
        return data

    def feed(self, data: bytes) -> None:
        """One datagram of the caller's side."""
        n = len(data)
        if n & 1 or not n or data[0] == 0xFF:
            data = self._take(data)  # type: ignore[assignment]
            if data is None:
                return
        frames = self._frames_in = self._frames_in + 1
        if self.paused and self.pairing != "taps":
            self._slot()  # nothing goes out; what plays goes on playing
            return
        self._last_frame = data
        if frames & self._mask:
            self._route(data)
            return
        clock = self._clock
        t0 = clock()  # type: ignore[misc]
        self._route(data)
        self._timer.observe(clock() - t0)  # type: ignore[misc,union-attr]
        if self._latency is not None:
            came = self._arrival()  # type: ignore[misc]
            if came is not None:  # read from a socket (not a FIFO): it has a stamp
                self._latency.observe(time() - came)

    def feed_write(self, data: bytes) -> None:
        """One datagram of the write tap (what the caller hears): paired with the read tap's."""
        data = self._take(data)  # type: ignore[assignment]
        if data is None:
            return
        if self._aligner is None:
            self._setup(len(data))
        self._aligner.push(WRITE, data)  # type: ignore[union-attr]
        self._pop_pairs()

    # -- the routes (bound once per shape in _route_for) -------------------------------------

    def _first(self, frame: bytes) -> None:
        """The first caller frame: per-call setup, then this frame's route."""
        if self._chunker is None:
            self._setup(len(frame))
        self._route = self._route_for()
        self._route(frame)
        if self.native is not None:
            self.native.rejoin()

    def _route_for(self) -> Callable[[bytes], None]:
        if self.pairing == "clock":
            return self._clocked
        if self.pairing == "taps":
            return self._tap_read
        if self.pairing == "interleaved":
            return self._interleaved
        return self._emit if self._player is None else self._mono_paced

    def _setup(self, first_len: int) -> None:
        """Per-call work done once, on the first frame: rate, pairing, resampler, chunker."""
        if not self.channel_rate:  # no read_rate variable: one datagram is one 20 ms frame
            inputs = 2 if self.pairing == "interleaved" else 1
            self.channel_rate = first_len // 2 // inputs * (1000 // PTIME_MS)
        if self.pairing in ("clock", "taps"):
            self._mixer = Mixer(self.mix, first_len)
            if self.pairing == "taps":
                self._aligner = TapAligner(first_len)
            else:
                self._frame_clock = FrameClock(PTIME_MS / 1000, exact=self._arrival,
                                               drops=self._dropped)
        self._resampler = make_resampler(self.channel_rate, self.stream_rate, self.channels)
        self._resample = self._resampler.process if self._resampler is not None else None
        self._chunker = Chunker(chunk_pattern(self.stream_rate, self.buffer_ms, self.channels))

    def _emit(self, frame: bytes) -> None:
        """One channel-rate frame (mono, interleaved stereo or mixed) on to the endpoint."""
        resample = self._resample
        out = resample(frame) if resample is not None else frame
        chunker = self._chunker
        if chunker.empty and len(out) == chunker.whole:  # type: ignore[union-attr]
            self.out.send(out)  # type: ignore[union-attr]  # one frame, one chunk: as it is
            self._frames_out += 1
            return
        chunker.push(out)  # type: ignore[union-attr]
        while (chunk := chunker.pop()) is not None:  # type: ignore[union-attr]
            self.out.send(chunk)  # type: ignore[union-attr]
            self._frames_out += 1

    def _slot(self) -> bytes | None:
        """This slot's frame of the playback (None: nothing plays here)."""
        player = self._player
        if player is not None and player.playing:
            return player.next_frame()
        return None

    def _mono_paced(self, frame: bytes) -> None:
        self._emit(frame)
        player = self._player
        if player.playing:  # type: ignore[union-attr]
            player.next_frame()  # type: ignore[union-attr]
        elif self.native is not None:  # played out: the pump may carry the frames again
            self.native.rejoin()

    def _clocked(self, frame: bytes) -> None:
        """stereo/mixed of the call's own unicast: each caller frame with what the call hears in
        the same slot; the clock puts lost frames back as silence, so the sides never drift."""
        mixer, clock, emit, played = self._mixer, self._frame_clock, self._emit, self._slot
        combine = mixer.combine  # type: ignore[union-attr]
        for _ in range(clock.arrive(self._now())):  # type: ignore[union-attr,misc]
            emit(combine(mixer.silence, played()))  # type: ignore[union-attr]
        held = self._held
        if held is not None:
            self._held = None
            emit(combine(held, played()))
        if clock.holding:  # type: ignore[union-attr]
            self._held = frame
        else:
            emit(combine(frame, played()))

    def _interleaved(self, frame: bytes) -> None:
        """One frame of a stereo recording (left read, right write): what the daemon plays this
        slot is added to the right side unless FreeSWITCH already has it there; mixed sums the
        two sides, clipping at full scale."""
        played = self._slot()
        if (played is not None and 2 * len(played) == len(frame)
                and self._player.tag not in self._in_tap):  # type: ignore[union-attr]
            frame = _add(frame, _tostereo(played, 2, 0, 1), 2)
        self._emit(frame if self.channels == 2 else _tomono(frame, 2, 1, 1))

    def _tap_read(self, frame: bytes) -> None:
        self._aligner.push(READ, frame)  # type: ignore[union-attr]
        self._pop_pairs()

    def _pop_pairs(self) -> None:
        aligner = self._aligner
        while (pair := aligner.pop()) is not None:  # type: ignore[union-attr]
            self._tap_pair(pair[0], pair[1])

    def _tap_pair(self, read: bytes, write: bytes) -> None:
        """One aligned slot of the taps: what the daemon plays this slot is added to the write
        side unless FreeSWITCH already has it there."""
        played = self._slot()
        if (played is not None and len(played) == len(write)
                and self._player.tag not in self._in_tap):  # type: ignore[union-attr]
            write = _add(write, played, 2)
        if self.paused or self._chunker is None:
            return
        self._emit(self._mixer.combine(read, write))  # type: ignore[union-attr]
