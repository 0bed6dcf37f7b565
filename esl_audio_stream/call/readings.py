"""What the status table, the metrics and the logs read of a stream: its counters and state,
from the parts that keep them (never on the per-frame path: read a few times a second at most).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..media.pcm import audioop
from .direct import DirectSource
from .record_source import RecordSource
from .state import LIVE, StreamState
from .tap_source import TapSource

if TYPE_CHECKING:
    from .link import Link
    from .pipeline import FramePipeline
    from .player import Player
    from .sources import Source

S = StreamState


class StreamReadings:
    """Read-only views of a stream (mixed into `Stream`, which has these attributes)."""

    lifecycle: StreamState
    pipeline: FramePipeline
    player: Player | None
    _link: Link | None
    _source: Source | None

    @property
    def state(self) -> str:
        """connecting, waiting (for FreeSWITCH's first frame), streaming, paused, reconnecting
        or stopping."""
        lifecycle = self.lifecycle
        if lifecycle is S.CONNECTING:
            return "connecting"
        if lifecycle not in LIVE:
            return "stopping"
        link = self._link
        if link is None or not link.is_open:
            return "reconnecting"
        if lifecycle is S.PAUSED:
            return "paused"
        return "streaming" if self.pipeline.frames_in else "waiting"

    @property
    def paused(self) -> bool:
        return self.lifecycle is S.PAUSED

    @property
    def frames_in(self) -> int:
        return self.pipeline.frames_in

    @property
    def frames_out(self) -> int:
        return self.pipeline.frames_out

    @property
    def malformed(self) -> int:
        return self.pipeline.malformed

    @property
    def last_frame(self) -> bytes:
        """The caller's last frame (a stereo recording's left side)."""
        frame = self.pipeline.last_frame
        if self.pipeline.pairing == "interleaved" and len(frame) >= 4:
            return audioop.tomono(frame[: len(frame) & ~3], 2, 1, 0)
        return frame

    @property
    def bytes_out(self) -> int:
        return self.pipeline.bytes_out

    @property
    def dropped_total(self) -> int:
        """Audio messages dropped by the link's backlog (oldest first)."""
        link = self._link
        return link.dropped_total if link is not None else 0

    @property
    def reconnects(self) -> int:
        link = self._link
        return link.reconnects if link is not None else 0

    @property
    def taps(self) -> list:
        """The tap channels (call/taps.py `Tap`) the audio comes from, if any."""
        source = self._source
        return list(source.taps) if isinstance(source, TapSource) else []

    @property
    def tap_uuids(self) -> list[str]:
        source = self._source
        return source.tap_uuids if isinstance(source, TapSource) else []

    @property
    def tap_frames_skipped(self) -> int:
        source = self._source
        return source.frames_skipped if isinstance(source, TapSource) else 0

    @property
    def tap_reopens(self) -> int:
        source = self._source
        return source.reopens if isinstance(source, TapSource) else 0

    @property
    def recording(self) -> str:
        """The FIFO FreeSWITCH records the call into ("" when none: another source, paused)."""
        source = self._source
        return source.path if isinstance(source, RecordSource) else ""

    @property
    def recording_restarts(self) -> int:
        """Recordings made again after one ended while the call went on."""
        source = self._source
        return source.restarts if isinstance(source, RecordSource) else 0

    @property
    def restores(self) -> int:
        source = self._source
        return source.restores if isinstance(source, DirectSource) else 0

    @property
    def playback_queued_seconds(self) -> float:
        player = self.player
        return player.queued_seconds if player is not None else 0.0
