"""What a stream needs from the daemon that owns it (the daemon is one; tests may be another)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..app.config import DaemonConfig
    from ..app.events import CallState
    from ..app.keeper import Keeper
    from ..app.stats import Counters
    from ..esl.connection import ESLConnection
    from ..media.unicast import PortPool
    from .call_audio import CallAudio


class StreamHost(Protocol):
    config: DaemonConfig
    esl: ESLConnection
    ports: PortPool
    counters: Counters
    keeper: Keeper  # writes the stream's record on its call (crash-only resume)
    owner: str

    def fire(self, uuid: str, subclass: str, body: str, *,
             extra: dict[str, str] | None = None) -> None: ...
    def call_state(self, uuid: str) -> CallState: ...
    def stream_ended(self, stream: Any) -> None: ...
    def tap_opened(self, tap_uuid: str, stream: Any) -> None: ...
    def tap_closed(self, tap_uuid: str) -> None: ...
    def call_audio(self, uuid: str, kind: str, channel_rate: int) -> CallAudio:
        """What the streams of the call share (call/call_audio.py): the one there is, else one
        made for a source of `kind`."""
