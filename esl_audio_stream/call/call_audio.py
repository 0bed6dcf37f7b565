"""What the streams of one call share: the audio taken from FreeSWITCH once, the one playback
into the call, and the caller's keys.

A call may carry several streams (app/registry.py), each with its own pipeline, protocol and
endpoint. FreeSWITCH is asked for the call's audio once whatever their number -- one unicast,
one recording or one set of taps (call/sources.py) -- and its frames are fanned out to every
stream's pipeline (call/fanout.py). The source is made by the first stream, in the kind that
stream chose (STREAM_SOURCE, or `auto`); a stream that joins takes the call's source as it is.
It is made again, richer, when a stream needs what it does not give: a stereo or mixed stream
joining a call recorded (or tapped) for mono streams gets a stereo recording (both taps) made,
which replaces the mono one once it delivers -- the mono streams go on from its left side (the
read tap) without a gap. The call's own unicast serves every mix as it is. A source is never
made poorer: it stays as rich as it was until its last stream leaves, then it is released.

Pause: the source pauses (taps closed, recording stopped) only when every stream of the call is
paused; one stream paused simply sends nothing. Playback: one stream at a time plays into the
call -- the first whose endpoint sends audio; another's audio is refused with an error event
while that player lives (see README, "Several streams on one call": two bots talking over each
other is never what a caller should hear, and one stream's clear or marks must not cut or
answer another's audio). The playback's frames are added to every stereo stream's right side.
Keys: each press once (app/dtmf.py), to each stream of the call.

Owned by the registry while one of its streams holds it: each stream holds a `Share`, the
source interface its lifecycle drives (call/stream.py); the last share to go releases the source.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import gevent.lock

from ..app import events
from ..media.files import CallFiles
from .direct import DirectSource
from .fanout import FanOut, Inlet
from .record_source import RecordSource
from .source_choice import make_source
from .sources import Playback, SourceEnv, SourceError

if TYPE_CHECKING:
    from ..app.config import DaemonConfig
    from ..app.resume import StreamRecord
    from ..esl.connection import ESLConnection
    from ..media.unicast import PortPool
    from .pipeline import FramePipeline
    from .player import Player
    from .sources import Source

log = logging.getLogger(__name__)


class AudioHost(Protocol):
    """What a call's audio needs of the daemon (a stream's host has it all)."""

    config: DaemonConfig
    esl: ESLConnection
    ports: PortPool

    def call_state(self, uuid: str) -> events.CallState: ...
    def tap_opened(self, tap_uuid: str, owner: CallAudio) -> None: ...
    def tap_closed(self, tap_uuid: str) -> None: ...


class Member(Protocol):
    """A stream, as what its call shares sees it."""

    name: str
    mix: str
    pipeline: FramePipeline
    player: Player | None

    def _fire(self, subclass: str, body: str) -> None: ...
    def _audio_failed(self, exc: BaseException) -> None: ...
    def _port_retried(self) -> None: ...
    def _save(self) -> None: ...
    def on_dtmf(self, digit: str, duration_ms: int) -> None: ...
    def carry_natively(self, source: Source) -> None: ...


class PlaybackTaken(SourceError):
    """Another stream of the call plays into it; `again`: this stream was told so before."""

    def __init__(self, message: str, again: bool) -> None:
        super().__init__(message)
        self.again = again


def channels_for(kind: str, mix: str) -> int:
    """What a stream needs of the call's source: 2 (both sides) for stereo or mixed from a
    recording or taps; 1 otherwise (the call's own unicast serves every mix)."""
    return 2 if kind != "direct" and mix != "mono" else 1


class CallAudio:
    """One call's source, its fan-out, its playback's owner (see the module docstring)."""

    def __init__(self, host: AudioHost, uuid: str, kind: str, channel_rate: int,
                 on_empty: Callable[[CallAudio], None]) -> None:
        self.uuid = uuid
        self.kind = kind  # direct | record | taps: the call's, whatever later streams chose
        self.fan = FanOut(channel_rate)
        self.source: Source | None = None
        self.channels = 0  # what the source was made for (1 or 2); 0: none yet
        self.shares: list[Share] = []
        self.started = False  # the source was started (or adopted) by a stream
        self.paused = False  # the source is paused: every stream is
        self.remade = 0  # sources made again, richer, for a stream that joined
        self.closed = False  # its last stream left: it is not shared again
        self._owner: Share | None = None  # whose playback plays into the call
        self._inlet: Inlet | None = None
        self._lock = gevent.lock.RLock()  # one change of the source at a time
        self._on_empty = on_empty
        cfg = host.config
        self._files = lambda: CallFiles(cfg.files_dir, uuid, cfg.files_group)
        self.env = SourceEnv(
            uuid=uuid, esl=host.esl, ports=host.ports, media_host=cfg.media_host,
            fs_media_host=cfg.fs_media_host, first_audio_timeout=cfg.first_audio_timeout,
            esl_timeout=cfg.esl_timeout, fire=self._fire, failed=self._failed,
            parked=lambda: host.call_state(uuid) is events.CallState.PARKED,
            gone=lambda: host.call_state(uuid) in (events.CallState.HUNGUP,
                                                   events.CallState.GONE),
            tap_opened=lambda tap: host.tap_opened(tap, self), tap_closed=host.tap_closed,
            retried=self._retried)

    def share(self, member: Member) -> Share:
        """`member`'s part of the call's audio (it feeds nothing until the stream opens it)."""
        share = Share(self, member)
        if self.shares and isinstance(self.source, (DirectSource, RecordSource)):
            self.source.retire_native()  # a pump carries one stream only: the fan-out now
        self.shares.append(share)
        return share

    # -- what the source tells every stream -----------------------------------------------------

    def _fire(self, subclass: str, body: str) -> None:
        for share in list(self.shares):
            share.member._fire(subclass, body)

    def _failed(self, exc: BaseException) -> None:
        for share in list(self.shares):
            share.member._audio_failed(exc)

    def _retried(self) -> None:
        for share in list(self.shares):
            share.member._port_retried()

    def _moved(self) -> None:
        for share in list(self.shares):
            share.member._save()

    def tap_gone(self, tap_uuid: str) -> None:
        """A tap channel hung up without us (the calls' tap owners name this)."""
        if self.source is not None and self.shares:
            self.source.tap_gone(tap_uuid)

    def on_dtmf(self, digit: str, duration_ms: int) -> None:
        """A key the caller pressed, once (app/dtmf.py): to each stream of the call."""
        for share in list(self.shares):
            share.member.on_dtmf(digit, duration_ms)

    # -- the source ---------------------------------------------------------------------------

    def _make(self, channels: int) -> tuple[Source, Inlet]:
        inlet = self.fan.inlet(interleaved=self.kind == "record" and channels == 2)
        mix = "stereo" if channels == 2 else "mono"
        source = make_source(self.kind, self.env, inlet, mix,  # type: ignore[arg-type]
                             files=self._files, on_moved=self._moved)
        return source, inlet

    def _first(self, share: Share, channels: int) -> None:
        """The call's first source; the stream's pipeline fed from its first frame."""
        self.source, self._inlet = self._make(channels)
        self.channels = channels
        self.fan.go_live(self._inlet)
        self.fan.add(share.member.pipeline)
        if len(self.shares) == 1:  # the call's only stream: its steady state may go native
            share.member.carry_natively(self.source)

    def open(self, share: Share) -> None:
        """`share`'s stream is about to connect: the call's source made (first stream), made
        again richer (a stream needing more), or taken as it is. Raises SourceError; a source
        made again that fails leaves the call's as it was."""
        with self._lock:
            need = channels_for(self.kind, share.member.mix)
            if self.source is None:
                self._first(share, need)
                self._or_none(self.source.open)  # type: ignore[union-attr]
                return
            if self.paused:
                self._resume_source()
            if need > self.channels:
                self._remake(need)
            self.fan.add(share.member.pipeline)

    def _remake(self, channels: int) -> None:
        """A richer source replaces the call's: made and delivering first, then it takes over
        (with the playback and its write-back port), then the old one is released."""
        old, owner = self.source, self._owner
        new, inlet = self._make(channels)
        if isinstance(new, RecordSource) and isinstance(old, RecordSource):
            new.gen = old.gen  # its recording's FIFO gets a name of its own (the next)
        player = owner.member.player if owner is not None else None
        if player is not None:
            new.attach(player)  # before it opens: what already plays is lined up
        try:
            new.open()
            if self.started:
                new.start()
        except BaseException:
            new.close(False)
            raise
        if owner is not None and owner.plays is not None:
            give = getattr(old, "give_write_back", None)
            port = give() if give is not None else None
            if port is not None:
                new.take_write_back(port)  # type: ignore[attr-defined]
            try:
                owner.plays = new.playback(owner.plays.mode)
            except SourceError as exc:
                self.env.error(f"{exc}: the call's playback stops")
                owner.plays = None
            self._pace(owner)
        self.source, self._inlet, self.channels = new, inlet, channels
        self.fan.go_live(inlet)
        self.remade += 1
        log.info("%s: the call's %s source made again for %d channels (a stream joined)",
                 self.uuid, self.kind, channels)
        try:
            old.close(False)  # type: ignore[union-attr]
        except Exception:
            log.exception("%s: error while releasing the replaced source", self.uuid)
        self._moved()

    def start(self, share: Share) -> None:
        """The stream connected: the source started, if no stream started it yet."""
        with self._lock:
            if not self.started and self.source is not None:
                self.source.start()
                self.started = True

    def adopt(self, share: Share, record: StreamRecord) -> None:
        """Carry on the source a previous process left (the first stream of the call carried
        on: the others' records name the same one). Raises SourceError."""
        with self._lock:
            if self.source is not None:
                self.fan.add(share.member.pipeline)
                return
            mix = record.source_mix or share.member.mix
            self._first(share, channels_for(self.kind, mix))
            self._or_none(self.source.adopt, record)  # type: ignore[union-attr]
            self.started = True

    def _or_none(self, do: Callable[..., None], *args: object) -> None:
        """The first source's open or adopt; where it fails, the call has no source again (so
        a stream that comes next makes its own) and what it made is released."""
        try:
            do(*args)
        except BaseException:
            source, self.source, self.channels = self.source, None, 0
            self.fan.members.clear()
            if source is not None:
                source.close(self.env.gone())
            raise

    def describe(self) -> dict:
        parts = self.source.describe() if self.source is not None else {}
        parts["source_mix"] = "stereo" if self.channels == 2 else "mono"
        return parts

    # -- pause and resume -----------------------------------------------------------------------

    def pause(self, share: Share) -> None:
        with self._lock:
            share.paused = True
            if (not self.paused and self.source is not None
                    and all(s.paused for s in self.shares)):
                self.paused = True
                self.source.pause()

    def resume(self, share: Share) -> None:
        """Raises SourceError (the source could not be made again)."""
        with self._lock:
            if self.paused:
                self._resume_source()
            share.paused = False

    def _resume_source(self) -> None:
        self.source.resume()  # type: ignore[union-attr]
        self.paused = False

    # -- playback -------------------------------------------------------------------------------

    def playback(self, share: Share, mode: str) -> Playback:
        """How `share`'s stream plays into the call; PlaybackTaken when another stream of the
        call plays into it now, SourceError when the source cannot play."""
        owner = self._owner
        if owner is not None and owner is not share and owner.member.player is not None:
            share.refused += 1
            raise PlaybackTaken(f"the call's playback belongs to its stream "
                                f"{owner.member.name or '(unnamed)'}: one stream at a time "
                                "plays into a call", again=share.refused > 1)
        if self.source is None:
            raise SourceError("no audio source")
        playback = self.source.playback(mode)
        self._owner, share.plays = share, playback
        return playback

    def attach(self, share: Share, player: Player) -> None:
        if self.source is not None:
            self.source.attach(player)
        self._pace(share)

    def _pace(self, owner: Share) -> None:
        playback, player = owner.plays, owner.member.player
        if playback is not None and playback.paced_here and player is not None:
            self.fan.pace(player, playback.in_tap)
        else:
            self.fan.pace(None)

    # -- streams leaving ------------------------------------------------------------------------

    def stop_reading(self, share: Share) -> None:
        """No more frames to `share`'s stream (the last one's: none read at all)."""
        with self._lock:
            self.fan.remove(share.member.pipeline)
            if not self.fan.members and self.source is not None:
                self.source.stop_reading()

    def leave(self, share: Share, hung_up: bool, hand_over: bool = False) -> None:
        """`share`'s stream ends (or is handed over): the last one releases the source (or
        leaves it to the next process)."""
        with self._lock:
            self.fan.remove(share.member.pipeline)
            if share not in self.shares:
                return  # left already (a hand-over, then the release)
            self.shares.remove(share)
            if self._owner is share:
                self._owner = None
                self.fan.pace(None)
            if self.shares:  # the others go on (a hand-over: each leaves the source as it is)
                if (not hand_over and self.source is not None and not self.paused
                        and all(s.paused for s in self.shares)):
                    self.paused = True
                    self.source.pause()
                return
            source, self.source = self.source, None
            self.closed = True  # the registry makes a new one for a stream that comes next
            try:
                if source is not None:
                    if hand_over:
                        source.hand_over()
                    else:
                        source.close(hung_up)
            finally:
                self._on_empty(self)


class Share:
    """One stream's part of its call's audio: the source interface its lifecycle drives."""

    def __init__(self, audio: CallAudio, member: Member) -> None:
        self.audio = audio
        self.member = member
        self.paused = False
        self.refused = 0  # its endpoint's audio refused: another stream plays into the call
        self.plays: Playback | None = None  # how the call's source plays this stream's audio

    @property
    def source(self) -> Source | None:
        """The call's source now (what status and tests read)."""
        return self.audio.source

    def open(self) -> None:
        self.audio.open(self)

    def start(self) -> None:
        self.audio.start(self)

    def adopt(self, record: StreamRecord) -> None:
        self.audio.adopt(self, record)

    def describe(self) -> dict:
        return self.audio.describe()

    def pause(self) -> None:
        self.audio.pause(self)

    def resume(self) -> None:
        self.audio.resume(self)

    def playback(self, mode: str) -> Playback:
        return self.audio.playback(self, mode)

    def attach(self, player: Player) -> None:
        self.audio.attach(self, player)

    def on_call_event(self, name: str) -> None:
        if name == "CHANNEL_PARK":
            self.audio.env.park_seen.set()
        source = self.audio.source
        if source is not None:
            source.on_call_event(name)

    def stop_reading(self) -> None:
        self.audio.stop_reading(self)

    def close(self, hung_up: bool) -> None:
        self.audio.leave(self, hung_up)

    def hand_over(self) -> None:
        self.audio.leave(self, False, hand_over=True)
