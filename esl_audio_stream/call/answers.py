"""What the endpoint says, carried out: its messages turned into actions by the stream's wire
protocol (protocols/), the actions done -- relayed to FreeSWITCH as events, refused with an error
event, or played -- and the player made on the first audio, as the source can play it (a mode it
cannot play falls back to one it can). Every event of the stream goes out through `_fire`, as its
protocol tells it (mod_audio_fork's have names and bodies of their own). A facet of `Stream`
(call/stream.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..app import events
from ..protocols.actions import Clear, Mark, Notify, Play, Refuse, Relay
from .broadcast import BroadcastPlayer
from .call_audio import PlaybackTaken
from .player import DisplacePlayer, InjectPlayer, Player
from .sources import SourceError
from .state import LIVE

if TYPE_CHECKING:
    from ..app.config import DaemonConfig
    from ..app.settings import StreamSettings
    from ..protocols.actions import Action, Actions, WireProtocol
    from ..protocols.choose import Teller
    from .call_audio import Share
    from .host import StreamHost
    from .link import Link
    from .pipeline import FramePipeline
    from .sources import Playback, Source
    from .state import StreamState

log = logging.getLogger(__name__)

_PLAYERS: dict[str, type[Player]] = {
    "inject": InjectPlayer, "displace": DisplacePlayer, "broadcast": BroadcastPlayer}


class EndpointAnswers:
    """The endpoint's messages, carried out (mixed into `Stream`, which has these)."""

    uuid: str
    cause: str
    host: StreamHost
    config: DaemonConfig
    settings: StreamSettings
    lifecycle: StreamState
    protocol: WireProtocol
    pipeline: FramePipeline
    player: Player | None
    playback: Playback | None
    _link: Link | None
    _source: Source | None
    _share: Share | None
    _told: Teller | None
    #: `Stream-Name` on every event of a named stream (None: unnamed, its events as they were)
    _name_header: dict[str, str] | None

    def _save(self) -> None: ...

    def _fire(self, subclass: str, body: str) -> None:
        """One event of this stream (app/events.py's names), as its protocol tells it."""
        told = self._told
        if told is not None:
            said = told(subclass, body, self.cause)
            if said is None:
                return
            subclass, body = said
        self.host.fire(self.uuid, subclass, body, extra=self._name_header)

    def _on_text(self, text: str) -> None:
        self._carry_out_all(self.protocol.on_text(text))

    def _on_binary(self, data: bytes) -> None:
        self._carry_out_all(self.protocol.on_binary(data))

    def _carry_out_all(self, actions: Actions) -> None:
        if type(actions) is tuple:  # several, in order (a Twilio mark: relayed, then kept)
            for action in actions:
                self._carry_out(action)
        else:
            self._carry_out(actions)  # type: ignore[arg-type]

    def _carry_out(self, action: Action) -> None:
        if isinstance(action, Relay):
            if not self.settings.suppress_log:
                log.info("%s: json from the endpoint: %s", self.uuid, action.text[:2000])
            self._fire(events.JSON, action.text)
            return
        if isinstance(action, Refuse):
            log.warning("%s: endpoint audio refused: %s", self.uuid, action.message)
            self._fire(events.ERROR, events.error_body(events.WS_PROTOCOL, action.message))
            return
        if isinstance(action, Notify):
            self._fire(action.subclass, action.body)
            return
        if isinstance(action, Clear):
            if self.player is not None:
                self.player.clear()
                if action.interrupt:
                    self.player.interrupt()
            return
        if isinstance(action, Mark) and self.player is None:
            self._send_mark(action.name, "playout")  # nothing queued before it
            return
        player = self._get_player()
        if player is None:
            return
        if isinstance(action, Play):
            player.play(action.chunk, action.announce, action.queue)
        elif isinstance(action, Mark):
            player.mark(action.name)

    def _send_mark(self, name: str, event: str) -> None:
        text = self.protocol.mark_reply(name, event)
        if text is not None and self._link is not None:
            self._link.send_text(text)

    def _get_player(self) -> Player | None:
        """The call's player, made on the first audio from the endpoint, as the source can
        play it (a mode it cannot play falls back to one it can)."""
        if self.player is not None or self.lifecycle not in LIVE:
            return self.player
        rate = self.pipeline.channel_rate
        share = self._share
        if not rate or self._link is None or share is None or self._source is None:
            self._fire(events.ERROR, events.error_body(
                events.WS_PROTOCOL, "audio from the endpoint before the call's rate is "
                "known: dropped"))
            return None
        try:
            playback = share.playback(self.settings.playback_mode)
        except PlaybackTaken as exc:  # another stream of the call plays: told once
            if not exc.again:
                self._fire(events.ERROR, events.error_body(
                    events.WS_PROTOCOL, f"{exc}; audio dropped"))
            return None
        except SourceError as exc:
            self._fire(events.ERROR, events.error_body(
                events.WS_PROTOCOL, f"{exc}; audio dropped"))
            return None
        cfg = self.config
        extra: dict = {}
        if playback.mode == "inject":
            extra["write"] = playback.write
        elif playback.mode == "broadcast":
            extra["restore"] = playback.restore
        self.player = player = _PLAYERS[playback.mode](
            self.uuid, fire=self._fire, send_mark=self._send_mark, channel_rate=rate,
            files_dir=cfg.files_dir, files_group=cfg.files_group, api=self.host.esl.api,
            suppress_log=self.settings.suppress_log, marks_changed=self._save,
            marks_when_heard=self.protocol.marks_when_heard, **extra)
        self.playback = playback
        share.attach(player)  # and paced by the call's frames, where they pace it
        return player
