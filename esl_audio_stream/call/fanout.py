"""One call's frames, from its one source to each of its streams' pipelines.

A call with several streams takes its audio from FreeSWITCH once (call/call_audio.py). The
source is handed an `Inlet` where it would be handed a pipeline: it feeds it, sets its rate,
clears its pairing, exactly as it would a pipeline's, and the `FanOut` passes each frame on to
every member pipeline in the shape that member takes:

- as it comes (the caller's side; a stereo recording's interleaved frame to a stereo or mixed
  member; a write-tap frame to a member pairing taps);
- a mono member of a stereo recording gets the left side (what the call reads), cut once per
  frame for all of them;
- only the inlet of the call's current source is live: a source being made to replace it (a
  richer one, for a stereo stream that joined a mono call) feeds nothing until it takes over.

One playback paces the call (the stream that owns it: call/call_audio.py). With one member its
pipeline is paced by the player itself, as a stream alone always was; with several, the fan-out
asks the player for each slot's frame once (`SharedSlot`) and every pipeline reads that frame,
so each stereo stream hears on its right side what the call hears.

Sans-IO, and on the per-frame path: routes are bound when members come and go, never per frame;
one member taking frames as they come is fed straight (one call more than a pipeline alone).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from ..media.pcm import audioop

if TYPE_CHECKING:
    from .pipeline import FramePipeline, Pacer

_tomono = audioop.tomono


def _drop(data: bytes) -> None:
    """Where frames go when nobody takes them."""


class SharedSlot:
    """The player as every pipeline of a call with several streams sees it: the fan-out takes
    one frame of it per slot (`tick`), each pipeline reads that same frame."""

    __slots__ = ("_frame", "_player")

    def __init__(self, player: Pacer) -> None:
        self._player = player
        self._frame: bytes | None = None

    def tick(self) -> None:
        player = self._player
        self._frame = player.next_frame() if player.playing else None

    @property
    def playing(self) -> bool:
        return self._frame is not None

    @property
    def tag(self) -> object:
        return self._player.tag

    def next_frame(self) -> bytes | None:
        return self._frame


class Inlet:
    """What one source is handed as its pipeline (see the module docstring)."""

    def __init__(self, fan: FanOut, interleaved: bool) -> None:
        self._fan = fan
        #: frames are a stereo recording's (left read, right write), not one side's
        self.interleaved = interleaved
        self._feed: Callable[[bytes], None] = _drop
        self._feed_write: Callable[[bytes], None] = _drop

    def feed(self, data: bytes) -> None:
        self._feed(data)

    def feed_write(self, data: bytes) -> None:
        self._feed_write(data)

    @property
    def channel_rate(self) -> int:
        return self._fan.channel_rate

    @channel_rate.setter
    def channel_rate(self, rate: int) -> None:
        self._fan.set_channel_rate(rate)

    @property
    def stream_rate(self) -> int:
        members = self._fan.members
        return members[0].stream_rate if members else 8000

    def clear_pairing(self) -> None:
        for member in self._fan.members:
            member.clear_pairing()

    def restart_timeline(self) -> None:
        for member in self._fan.members:
            member.restart_timeline()


class FanOut:
    """The member pipelines of one call, and the inlet of its current source."""

    def __init__(self, channel_rate: int = 0) -> None:
        self.members: list[FramePipeline] = []
        self._rate = channel_rate
        self._live: Inlet | None = None
        self._player: Pacer | None = None
        self._in_tap: Collection[object] = ()
        self._slot: SharedSlot | None = None
        self._as_is: tuple[Callable[[bytes], None], ...] = ()
        self._left: tuple[Callable[[bytes], None], ...] = ()
        self._writes: tuple[Callable[[bytes], None], ...] = ()

    # -- members, sources, the player (never per frame) ---------------------------------------

    @property
    def channel_rate(self) -> int:
        """The call's rate: as a source set it, else as a member was told (read_rate)."""
        if self._rate:
            return self._rate
        return next((m.channel_rate for m in self.members if m.channel_rate), 0)

    def set_channel_rate(self, rate: int) -> None:
        self._rate = rate
        for member in self.members:
            member.channel_rate = rate

    def inlet(self, interleaved: bool) -> Inlet:
        """An inlet for a new source: it feeds nothing until `go_live`."""
        return Inlet(self, interleaved)

    def go_live(self, inlet: Inlet) -> None:
        """`inlet`'s source is the call's from now on; the previous one's frames are dropped."""
        old, self._live = self._live, inlet
        if old is not None and old is not inlet:
            old._feed = old._feed_write = _drop
        self._bind()

    def add(self, member: FramePipeline) -> None:
        if member not in self.members:
            if self._rate:
                member.channel_rate = self._rate
            self.members.append(member)
            self._bind()

    def remove(self, member: FramePipeline) -> None:
        """No more frames to `member` (nor playback slots)."""
        if member in self.members:
            self.members.remove(member)
            member.pace(None)
            self._bind()

    def pace(self, player: Pacer | None, in_tap: Collection[object] = ()) -> None:
        """The frames fed here pace `player` (None: nothing plays here, or something else
        paces it); `in_tap` as call/pipeline.py's `pace` takes it."""
        self._player, self._in_tap = player, in_tap
        self._bind()

    def _bind(self) -> None:
        """The routes and the pacing, for the members and the live inlet as they are now."""
        members, player, inlet = self.members, self._player, self._live
        self._slot = None
        if player is None:
            for member in members:
                member.pace(None)
        elif len(members) == 1:
            members[0].pace(player, self._in_tap)
        else:
            self._slot = SharedSlot(player)
            for member in members:
                member.pace(self._slot, self._in_tap)
        interleaved = inlet is not None and inlet.interleaved
        self._left = tuple(m.feed for m in members if interleaved and m.pairing == "none")
        self._as_is = tuple(m.feed for m in members
                            if not (interleaved and m.pairing == "none"))
        self._writes = tuple(m.feed_write for m in members if m.pairing == "taps")
        if inlet is None:
            return
        if not members:
            inlet._feed = _drop
        elif self._slot is None and not self._left and len(self._as_is) == 1:
            inlet._feed = self._as_is[0]  # one member as it comes: straight to it
        else:
            inlet._feed = self._fan
        writes = self._writes
        inlet._feed_write = writes[0] if len(writes) == 1 else (
            self._fan_write if writes else _drop)

    # -- per frame ----------------------------------------------------------------------------

    def _fan(self, data: bytes) -> None:
        slot = self._slot
        if slot is not None:
            slot.tick()
        for feed in self._as_is:
            feed(data)
        left = self._left
        if left:
            n = len(data)  # not a stereo frame: as it is (each member counts it malformed)
            side = data if n & 3 or not n else _tomono(data, 2, 1, 0)
            for feed in left:
                feed(side)

    def _fan_write(self, data: bytes) -> None:
        for feed in self._writes:
            feed(data)
