"""The daemon's streams: by call, and within a call by name.

A call may carry several streams (an ASR bot and a recorder, a mod_audio_fork bug beside a
uuid_audio_stream stream), each named: mod_audio_fork's bugname, or the name a uuid_audio_stream
command gives (`<uuid>@<name>`, app/commands.py; "" when none). A name is taken on a call while
its stream is being admitted (`reserve`) and while it runs, so two starts of one name never make
two streams. What the streams of one call share (the audio taken from FreeSWITCH once, the
playback, the caller's keys: call/call_audio.py) is kept here too, by call, for as long as one
of its streams holds it.

As a Mapping -- what code that knows one stream per call, and the tests, read -- it is call uuid
-> the call's first stream. Everything that must see every stream uses `all()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..call.call_audio import CallAudio
    from ..call.stream import Stream


class Streams(Mapping[str, "Stream"]):
    """The registry (see the module docstring)."""

    def __init__(self) -> None:
        self._calls: dict[str, dict[str, Stream]] = {}
        #: (uuid, name) of streams being admitted, not registered yet
        self.starting: set[tuple[str, str]] = set()
        #: call uuid -> what its streams share, while one of them holds it
        self.audio: dict[str, CallAudio] = {}

    # -- a call's first stream (Mapping) ----------------------------------------------------

    def __getitem__(self, uuid: str) -> Stream:
        streams = self._calls[uuid]
        return next(iter(streams.values()))

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._calls))

    def __len__(self) -> int:
        return len(self._calls)

    # -- every stream, by call and name -----------------------------------------------------

    def all(self) -> list[Stream]:
        """Every registered stream (a list: streams come and go meanwhile)."""
        return [s for streams in list(self._calls.values()) for s in list(streams.values())]

    @property
    def count(self) -> int:
        return sum(len(streams) for streams in self._calls.values())

    def of(self, uuid: str) -> list[Stream]:
        """The call's streams, oldest first."""
        return list(self._calls.get(uuid, {}).values())

    def named(self, uuid: str, name: str) -> Stream | None:
        return self._calls.get(uuid, {}).get(name)

    def add(self, stream: Stream) -> None:
        self._calls.setdefault(stream.uuid, {})[stream.name] = stream

    def remove(self, stream: Stream) -> bool:
        """Take `stream` out (not another of its name); whether it was in."""
        streams = self._calls.get(stream.uuid)
        if streams is None or streams.get(stream.name) is not stream:
            return False
        del streams[stream.name]
        if not streams:
            del self._calls[stream.uuid]
        return True

    # -- names being admitted -----------------------------------------------------------------

    def taken(self, uuid: str, name: str) -> bool:
        """A stream of that name runs on the call, or is being admitted."""
        return (uuid, name) in self.starting or self.named(uuid, name) is not None

    def busy(self, uuid: str) -> bool:
        """The call has a stream, or one being admitted."""
        return uuid in self._calls or any(u == uuid for u, _ in self.starting)

    def reserve(self, uuid: str, name: str) -> None:
        self.starting.add((uuid, name))

    def release(self, uuid: str, name: str) -> None:
        self.starting.discard((uuid, name))

    def starting_calls(self) -> set[str]:
        return {uuid for uuid, _ in self.starting}

    # -- what a call's streams share ------------------------------------------------------------

    def shared(self, uuid: str, make: Callable[[], CallAudio]) -> CallAudio:
        """The call's CallAudio; a new one (`make`) when it has none, or its last stream left."""
        audio = self.audio.get(uuid)
        if audio is None or audio.closed:
            audio = self.audio[uuid] = make()
        return audio

    def unshare(self, audio: CallAudio) -> None:
        """`audio`'s last stream left."""
        if self.audio.get(audio.uuid) is audio:
            del self.audio[audio.uuid]
