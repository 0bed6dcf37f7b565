"""What an endpoint's message asks the stream to do, and what a wire protocol must provide.

A protocol turns each message from the endpoint into an action, or a few (pure: no sockets, no
player); the stream carries them out -- playback to the player, relays and refusals to
FreeSWITCH as events. Outgoing, it says what opens each connection, how audio chunks are sent
(its `audio_out`, on the per-frame path), how a mark is answered, how a caller's key is told,
what ends the stream, and what a next daemon process needs to carry its numbering on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..media.decode import Chunk


@dataclass(frozen=True, slots=True)
class Play:
    """Audio to play into the call, after what plays. `announce`: its file is named in a play
    event (mod_audio_stream's streamAudio); `queue` False: only that (mod_audio_fork's
    playAudio, whose file the application plays)."""

    chunk: Chunk
    announce: bool = False
    queue: bool = True


@dataclass(frozen=True, slots=True)
class Mark:
    """Answer when all audio queued before it has played."""

    name: str


@dataclass(frozen=True, slots=True)
class Clear:
    """Barge-in: stop what plays, drop the queue, answer pending marks as cleared.
    `interrupt`: FreeSWITCH's own playback on the call is broken too (uuid_break)."""

    interrupt: bool = False


@dataclass(frozen=True, slots=True)
class Relay:
    """The endpoint's own message, relayed to FreeSWITCH subscribers as an event."""

    text: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """A message that cannot be carried out: an error event; the stream goes on."""

    message: str


@dataclass(frozen=True, slots=True)
class Notify:
    """An event of the protocol's own (mod_audio_fork's), fired as it is ("" body: none)."""

    subclass: str
    body: str


Action = Play | Mark | Clear | Relay | Refuse | Notify
#: What one message asks: an action, or several in order (Twilio's mark: relayed, then kept).
Actions = Action | tuple[Action, ...]


class AudioOut(Protocol):
    """Where a stream's chunks go (`send` is looked up per chunk)."""

    send: Callable[[bytes], bool]


class Link(Protocol):
    """What a protocol sends through: the stream's WebSocket over time."""

    send: Callable[[bytes], bool]

    def send_text(self, text: str) -> bool: ...


class WireProtocol(Protocol):
    name: str
    #: Audio goes in text frames (already UTF-8 encoded by audio_out), not binary ones.
    audio_as_text: bool
    #: A mark is answered when its last frame has been heard, a slot after it was handed to
    #: FreeSWITCH (Twilio: "played"); else as it is handed over (mod_audio_stream's).
    marks_when_heard: bool

    @property
    def wire_bytes_per_second(self) -> int:
        """Audio as it goes on the wire, per second (what bounds the backlog)."""
        ...

    def greeting(self) -> list[str]:
        """Text messages that open every connection (the first and each reconnection)."""
        ...

    def audio_out(self, link: Link) -> AudioOut:
        """What the frame pipeline hands its chunks to."""
        ...

    def goodbye(self, text: str | None) -> list[str]:
        """Text messages that end the stream (a stop's text), before the close frame."""
        ...

    def mark_reply(self, name: str, event: str) -> str | None:
        """The message answering a mark (`event`: playout or cleared); None: not answered."""
        ...

    def dtmf(self, digit: str, duration_ms: int) -> str | None:
        """The message telling the endpoint the caller pressed a key; None: not told."""
        ...

    def resume(self) -> None:
        """Audio flows again after a pause (numbering that follows time restarts from now)."""
        ...

    def record_extra(self) -> dict:
        """What a next daemon process needs to carry the stream on as the endpoint knows it
        (app/resume.py StreamRecord.extra): JSON-able, small."""
        ...

    def on_text(self, text: str) -> Actions: ...

    def on_binary(self, data: bytes) -> Actions: ...
