"""What an endpoint's message asks the stream to do, and what a wire protocol must provide.

A protocol turns each message from the endpoint into one action (pure: no sockets, no player);
the stream carries actions out -- playback to the player, relays and refusals to FreeSWITCH as
events. Outgoing, it says what opens each connection, how audio chunks are sent, how a mark is
answered and what ends the stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..media.decode import Chunk


@dataclass(frozen=True, slots=True)
class Play:
    """Audio to play into the call, after what plays. `announce`: its file is named in a play
    event (mod_audio_stream's streamAudio)."""

    chunk: Chunk
    announce: bool = False


@dataclass(frozen=True, slots=True)
class Mark:
    """Answer when all audio queued before it has played."""

    name: str


@dataclass(frozen=True, slots=True)
class Clear:
    """Barge-in: stop what plays, drop the queue, answer pending marks as cleared."""


@dataclass(frozen=True, slots=True)
class Relay:
    """The endpoint's own message, relayed to FreeSWITCH subscribers as an event."""

    text: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """A message that cannot be carried out: an error event; the stream goes on."""

    message: str


Action = Play | Mark | Clear | Relay | Refuse


class AudioOut(Protocol):
    """Where a stream's chunks go (`send` is looked up per chunk)."""

    send: Callable[[bytes], bool]


class Link(Protocol):
    """What a protocol sends through: the stream's WebSocket over time."""

    send: Callable[[bytes], bool]

    def send_text(self, text: str) -> bool: ...


class WireProtocol(Protocol):
    name: str

    def greeting(self) -> list[str]:
        """Text messages that open every connection (the first and each reconnection)."""
        ...

    def audio_out(self, link: Link) -> AudioOut:
        """What the frame pipeline hands its chunks to."""
        ...

    def goodbye(self, text: str | None) -> list[str]:
        """Text messages that end the stream (a stop's text), before the close frame."""
        ...

    def mark_reply(self, name: str, event: str) -> str:
        """The message answering a mark (`event`: playout or cleared)."""
        ...

    def on_text(self, text: str) -> Action: ...

    def on_binary(self, data: bytes) -> Action: ...
