"""One call's stream: its lifecycle, and the one place that releases everything it holds.

A `Stream` is made of parts, each owning its own resources: the source (call/sources.py: ports,
sockets, io watchers, tap channels), the frame pipeline (call/pipeline.py: pure, plus its
resampler), the wire protocol (protocols/: what the endpoint hears and what its messages mean),
the link (call/link.py: the WebSocket over time, with the one outgoing queue) and, once the
endpoint sends audio, the player (call/player.py, call/broadcast.py). The stream itself is the
lifecycle (call/state.py) and the wiring: `start` builds and connects them, `stop` is the single
way out, whatever ends the stream (a command, the caller hanging up, the endpoint closing,
daemon shutdown), and it releases all of them.
"""

from __future__ import annotations

import logging
import time
from time import monotonic, perf_counter
from typing import TYPE_CHECKING

import gevent
import gevent.event

from ..app import events
from ..app.commands import CommandError, Start
from ..app.resume import StreamRecord
from ..app.settings import SettingsError, StreamSettings
from ..app.stats import SAMPLE_MASK
from ..app.tls import ssl_context_for
from ..protocols import choose as protocols
from ..ws.errors import WSError
from . import source_choice
from .answers import EndpointAnswers
from .direct import DirectSource
from .host import StreamHost
from .link import Link
from .pipeline import FramePipeline
from .player import Player
from .reader import arrival, dropped
from .readings import StreamReadings
from .record_source import RecordSource
from .sources import Playback, SourceError
from .state import LIVE, StreamState, advance

if TYPE_CHECKING:
    from .call_audio import Share
    from .sources import Source

log = logging.getLogger(__name__)

S = StreamState


class Stream(StreamReadings, EndpointAnswers):
    """A call's audio on its way to one WebSocket endpoint."""

    def __init__(self, host: StreamHost, cmd: Start, channel_rate: int,
                 settings: StreamSettings | None = None,
                 resumed: StreamRecord | None = None, start_text: str | None = None) -> None:
        self.host = host
        self.uuid = cmd.uuid
        self.name = cmd.name  # on its call ("": the unnamed one; mod_audio_fork's bugname)
        self.url = cmd.url
        self.mix = cmd.mix
        self.rate = cmd.rate
        self.metadata = cmd.metadata
        self.start_text = start_text  # the call's facts, first on every connection (opt-in)
        #: The daemon's configuration when the stream started: a reload (SIGHUP) is for new streams.
        self.config = host.config
        self.settings = settings or self.config.stream_defaults
        self.lifecycle = S.CONNECTING
        #: What a pause, resume or stop asked for while connecting; applied when start ends.
        self._wanted = S.STREAMING
        self.cause = ""
        self.started_at = monotonic()
        self.done = gevent.event.Event()  # set once everything is released
        self._started = gevent.event.Event()  # set once start() has finished, either way
        self._peer_close: tuple[int, str] | None = None
        #: What a previous daemon process left on the call, when this stream carries it on.
        self.resumed = resumed
        self.started_epoch = resumed.started if resumed is not None else time.time()
        #: What the endpoint is spoken to in (protocols/): a carried-on stream keeps its own.
        self.protocol = protocols.make(
            resumed.protocol if resumed is not None else self.settings.protocol,
            uuid=self.uuid, metadata=cmd.metadata, rate=cmd.rate, mix=cmd.mix,
            settings=self.settings, account_sid=self.config.twilio_account_sid,
            max_audio_bytes=self.config.max_audio_bytes, started=self.started_epoch,
            resumed=resumed.extra if resumed is not None else cmd.options)
        self._told = protocols.teller(self.protocol)  # how its events are told (answers.py)
        named = self.name != protocols.default_name(self.protocol)
        self._name_header = {events.STREAM_NAME_HEADER: self.name} if named else None
        #: Where the audio comes from: "direct", "record" or "taps" (see call/sources.py): the
        #: call's source, shared by its streams (call/call_audio.py), whatever this one chose.
        audio = host.call_audio(self.uuid, resumed.source if resumed is not None else
                                source_choice.choose(self.settings.source, self._parked()),
                                channel_rate)
        self.source = audio.kind
        self.pipeline = self._make_pipeline(channel_rate)
        self._link: Link | None = None
        self.player: Player | None = None
        self.playback: Playback | None = None
        self._stopper: gevent.Greenlet | None = None
        self._pending_texts: list[str] = []  # send_text before the WebSocket is open
        #: FreeSWITCH-side ports that gave no audio, so another was tried (someone held them)
        self.port_retries = 0
        #: Its part of the call's audio (last: from here on only _release or hand_over end it).
        self._share: Share | None = audio.share(self)

    @property
    def _source(self) -> Source | None:
        """The call's source now (shared by its streams; made again when one needs more)."""
        share = self._share
        return share.source if share is not None else None

    # -- start ------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect the endpoint, then ask FreeSWITCH for the call's audio. Raises CommandError
        (with everything already released) when the stream cannot start."""
        link = self._prepare()
        try:
            self._share.open()  # type: ignore[union-attr]  # taps first: before anything plays
        except SourceError as exc:
            if self.source != "direct":
                self._fire(events.ERROR, events.error_body(events.WS_PROTOCOL, str(exc)))
            self._fail()
            raise CommandError(str(exc)) from None
        self._connect(link)
        self._fire(events.CONNECT, events.connect_body())
        try:
            self._share.start()  # type: ignore[union-attr]
        except SourceError as exc:
            link.close(1000, "")
            self._fail()
            raise CommandError(str(exc)) from None
        self._started_as(self._wanted)
        # on the call before +OK: a stream is carried on after a restart only if its record is
        self.host.keeper.save(self.uuid, self.record(), now=True)

    def carry_on(self) -> None:
        """Carry on the stream a previous daemon process left on the call (`resumed`): its
        sockets bound again (FreeSWITCH never stopped sending), its taps adopted (or made again),
        the WebSocket connected again with the metadata first, marks the endpoint still waited
        for answered `cleared`. Raises CommandError when it cannot be carried on."""
        record = self.resumed
        assert record is not None
        link = self._prepare()
        for name in record.marks:  # after the metadata, before any audio
            link.send_text(self.protocol.mark_reply(name, "cleared"))
        try:
            self._share.adopt(record)  # type: ignore[union-attr]
        except SourceError as exc:
            self._fire(events.ERROR, events.error_body(events.WS_PROTOCOL, str(exc)))
            self._fail()
            raise CommandError(str(exc)) from None
        self._connect(link)
        self._fire(events.CONNECT, events.connect_body())
        self._fire(events.ERROR, events.error_body(
            events.WS_IO, "carried on by a new daemon process: audio FreeSWITCH sent meanwhile "
            f"and playback queued before were lost ({len(record.marks)} marks answered "
            "cleared)"))
        self._started_as(S.PAUSED if record.paused else self._wanted)
        self.host.keeper.save(self.uuid, self.record(), now=True)

    def _prepare(self) -> Link:
        """The TLS context, the source and the link (not connected yet); raises CommandError."""
        cfg, st = self.config, self.settings
        try:
            ssl_context = ssl_context_for(st) if self.url.startswith("wss:") else None
        except SettingsError as exc:  # unusable TLS files: libwsc's TLS_INIT_FAILED
            self._fire(events.ERROR, events.error_body(events.WS_TLS_INIT_FAILED, str(exc)))
            self._fail()
            raise CommandError(str(exc)) from None
        pipeline = self.pipeline
        protocol = self.protocol
        self._link = link = Link(
            self.url, uuid=self.uuid, fire=self._fire, on_text=self._on_text,
            on_binary=self._on_binary, on_gone=self._on_gone, metadata=self.metadata,
            greeting=self._greeting, audio_as_text=protocol.audio_as_text,
            reconnect=st.reconnect,
            backlog_bytes=int(cfg.reconnect_buffer_seconds * protocol.wire_bytes_per_second),
            headers=st.extra_headers, deflate=st.deflate, heartbeat=st.heartbeat,
            ssl_context=ssl_context, connect_timeout=cfg.ws_connect_timeout,
            close_timeout=cfg.ws_close_timeout)
        pipeline.out = self.protocol.audio_out(link)
        for text in self._pending_texts:  # send_text while connecting: after the metadata
            link.send_text(text)
        self._pending_texts.clear()
        return link

    def carry_natively(self, source: Source) -> None:
        """The call's source was just made for this stream alone: a native pump may carry its
        steady state (native/pump.py) -- a direct or record source, and [media] native."""
        if self.config.native and self._link is not None and isinstance(
                source, (DirectSource, RecordSource)):
            source.carry_natively(self.pipeline, self._link)

    def _greeting(self) -> list[str]:
        """What opens every connection: the start message (if asked), then the protocol's."""
        said = self.protocol.greeting()
        return [self.start_text, *said] if self.start_text is not None else said

    def _connect(self, link: Link) -> None:
        """The first connection; raises CommandError (everything released) when it fails or
        a stop came meanwhile."""
        try:
            link.connect()
        except WSError as exc:
            self._fire(events.ERROR, events.error_body(
                exc.code, exc.message, http_status=exc.http_status))
            self._fail()
            raise CommandError(f"cannot connect to {self.url}: {exc.message}") from None
        if self._wanted is S.STOPPING:  # stopped (or hung up) while connecting
            link.close(1000, events.CLOSE_REASONS[1000])
            self._fail()
            raise CommandError("stopped while connecting")

    def _started_as(self, wanted: StreamState) -> None:
        self.lifecycle = advance(self.lifecycle, S.PAUSED if wanted is S.PAUSED else S.STREAMING)
        if wanted is S.PAUSED:
            self._pause_parts()
        self._started.set()
        if wanted is S.STOPPING:  # a stop came while FreeSWITCH was being asked
            self.stop_async(self.cause or "command")

    # -- the record on the call (crash-only) ------------------------------------------------

    def record(self) -> StreamRecord:
        """What a next daemon process needs to carry this stream on (app/resume.py)."""
        player = self.player
        parts = self._share.describe() if self._share is not None else {}
        return StreamRecord(
            owner=self.host.owner, url=self.url, mix=self.mix, rate=self.rate,
            metadata=self.metadata, source=self.source, protocol=self.protocol.name,
            paused=self.lifecycle is S.PAUSED,
            marks=tuple(player.pending_marks) if player is not None else (),
            started=self.started_epoch, extra=self.protocol.record_extra(), name=self.name,
            **parts)

    def _save(self) -> None:
        """Something the record says changed (ports, taps, pause, marks): written soon, in the
        keeper's greenlet (never blocks: called from the per-frame path too)."""
        if self.lifecycle in (S.STREAMING, S.PAUSED):
            self.host.keeper.save(self.uuid, self.record())

    def _make_pipeline(self, channel_rate: int) -> FramePipeline:
        return FramePipeline(
            mix=self.mix, stream_rate=self.rate, buffer_ms=self.settings.buffer_ms,
            pairing=source_choice.pairing(self.source, self.mix), channel_rate=channel_rate,
            now=gevent.get_hub().loop.now, clock=perf_counter,
            timer=self.host.counters.frame_time, sample_mask=SAMPLE_MASK, arrival=arrival,
            dropped=dropped, latency=self.host.counters.frame_latency)

    def _parked(self) -> bool:
        return self.host.call_state(self.uuid) is events.CallState.PARKED

    def _port_retried(self) -> None:
        self.port_retries += 1

    def _audio_failed(self, exc: BaseException) -> None:
        """The audio path broke (a socket error, a bug on the per-frame path)."""
        log.error("%s: audio path failed: %s", self.uuid, exc)
        self.stop_async("error")

    def _fail(self) -> None:
        """start() gave up: release everything; a stop() waiting for the start returns."""
        self.lifecycle = S.ENDED
        self._release()
        self._started.set()
        self.done.set()

    # -- commands on a running stream -------------------------------------------------------

    def pause(self) -> None:
        """No audio is sent while paused; the WebSocket stays open (heartbeats go on). Taps
        are closed (at once, or when what plays through them has played) and made again on
        resume, so none runs idle."""
        if self.lifecycle is S.CONNECTING:
            if self._wanted is not S.STOPPING:
                self._wanted = S.PAUSED
            return
        if self.lifecycle is S.STREAMING:
            self.lifecycle = advance(self.lifecycle, S.PAUSED)
            self._pause_parts()
            self._save()

    def _pause_parts(self) -> None:
        self.pipeline.pause()
        self._share.pause()  # type: ignore[union-attr]  # the source, once every stream is

    def resume(self) -> None:
        """Audio restarts from the present moment: nothing held back is sent, and the resampler
        forgets the audio from before the pause. Taps are made again first."""
        if self.lifecycle is S.CONNECTING:
            if self._wanted is not S.STOPPING:
                self._wanted = S.STREAMING
            return
        if self.lifecycle is not S.PAUSED:
            return
        try:
            self._share.resume()  # type: ignore[union-attr]
        except SourceError as exc:
            self._fire(events.ERROR, events.error_body(events.WS_PROTOCOL, str(exc)))
            raise CommandError(str(exc)) from None
        self.pipeline.resume()
        self.protocol.resume()
        self.lifecycle = advance(self.lifecycle, S.STREAMING)
        self._save()

    def send_text(self, text: str) -> None:
        """Send a text message now; while connecting or reconnecting it waits (after the
        metadata), in order with the audio."""
        link = self._link
        if link is None:
            self._pending_texts.append(text)
        elif not link.send_text(text):
            raise CommandError("the endpoint is not keeping up: text dropped")

    def on_call_event(self, name: str, application: str, data: str) -> None:
        """A channel event of this call (the daemon passes the few that matter)."""
        if self._share is not None:
            self._share.on_call_event(name)
        if self.player is not None:
            self.player.on_call_event(name, application, data)

    def on_dtmf(self, digit: str, duration_ms: int) -> None:
        """A key the caller pressed (app/dtmf.py: once, in order): told to the endpoint as the
        protocol says, at once -- also while paused; while connecting, after the greeting."""
        text = self.protocol.dtmf(digit, duration_ms) if self.lifecycle in LIVE else None
        if text is None:  # not told (or the stream is ending): its numbering is not used up
            return
        link = self._link
        if link is None:
            self._pending_texts.append(text)
        else:
            link.send_text(text)

    def _on_gone(self, code: int, reason: str) -> None:
        """The endpoint closed normally (or reconnection is off or gave up): the stream ends."""
        if self.lifecycle in LIVE:
            self._peer_close = (code, reason)
            self.stop_async("endpoint-closed")

    # -- stop -------------------------------------------------------------------------------

    def stop_async(self, cause: str, text: str | None = None) -> None:
        """Stop from a greenlet that must not block (ESL reader, WebSocket reader, the event
        loop itself)."""
        if self._stopper is None and self.lifecycle in LIVE:
            self._stopper = gevent.spawn(self.stop, cause, text)

    def stop(self, cause: str = "command", text: str | None = None) -> None:
        """Stop the audio, send the final text (the last message before the close), close the
        WebSocket (1000), fire the disconnect event, tell FreeSWITCH to stop sending and release
        everything. Idempotent; later callers wait for the first."""
        cfg = self.config
        if self.lifecycle is S.CONNECTING:  # let start() see it and give up (or stop after)
            self._wanted = S.STOPPING
            self.cause = self.cause or cause
            self._started.wait(cfg.ws_connect_timeout + cfg.first_audio_timeout + 1)
            if self.lifecycle not in (S.STREAMING, S.PAUSED):
                self.done.wait(1)
                return
        if self.lifecycle not in LIVE:
            self.done.wait(cfg.ws_close_timeout + cfg.destroy_wait + 5)
            return
        self.lifecycle = advance(self.lifecycle, S.STOPPING)
        self.cause = cause
        self.host.keeper.drop(self.uuid, self.name)  # first: never undone by a restart
        try:
            if self._share is not None:
                self._share.stop_reading()
            link = self._link
            if self._peer_close is not None:  # the endpoint ended it
                code, reason = self._peer_close
                self._fire(events.DISCONNECT, events.disconnect_body(code, reason))
            elif link is not None and link.is_open:
                code, reason = 1000, events.CLOSE_REASONS[1000]
                *before, last = self.protocol.goodbye(text) or [None]
                for message in before:  # in order, after what is queued
                    link.send_text(message)
                link.close(code, reason, last)
                self._fire(events.DISCONNECT, events.disconnect_body(code, reason))
            elif link is not None:
                link.close()  # reconnecting: stop trying (the drop was reported when it came)
        except Exception:
            log.exception("%s: error while stopping", self.uuid)
        finally:
            self._release()
            self.lifecycle = advance(self.lifecycle, S.ENDED)
            self.done.set()
            self.host.stream_ended(self)

    def hand_over(self, timeout: float = 0.5) -> None:
        """A planned restart: leave the stream to the next process. Its record stays on the
        call (written once more, with the marks waiting now); FreeSWITCH keeps streaming to the
        same ports and the taps stay; the endpoint gets a close 1001 (within `timeout`: the
        process exits within a second) and the next process connects again; no disconnect
        event, nothing asked of FreeSWITCH."""
        if self.lifecycle not in (S.STREAMING, S.PAUSED):
            return
        record = self.record()
        self.lifecycle = advance(self.lifecycle, S.STOPPING)
        self.cause = "handover"
        share, self._share = self._share, None
        try:
            if share is not None:
                share.stop_reading()
            self.host.keeper.save(self.uuid, record, now=True)
            link = self._link
            if link is not None and link.is_open:
                with gevent.Timeout(timeout, False):
                    link.close(1001, "going away: the daemon restarts, the stream goes on")
        except Exception:
            log.exception("%s: error while handing over", self.uuid)
        finally:
            if share is not None:
                share.hand_over()  # the call's source left to the next process with its last
            player, self.player = self.player, None
            if player is not None:
                player.abandon()
            self.pipeline.close()
            if self._link is not None:
                self._link.abort()
            self.lifecycle = advance(self.lifecycle, S.ENDED)
            self.done.set()
            self.host.stream_ended(self)

    def _release(self) -> None:
        """Everything the stream holds, each part releasing its own: FreeSWITCH told to stop
        sending (a parked call that goes on is re-parked), taps killed, ports and sockets given
        back, the player's files removed, the resampler freed, the WebSocket gone."""
        hung_up = self.cause == "hangup"
        share, self._share = self._share, None
        if share is not None:
            try:
                share.close(hung_up)  # the call's source released with its last stream
            except Exception:
                log.exception("%s: error while releasing the source", self.uuid)
        player, self.player = self.player, None
        if player is not None:
            player.close(hung_up=hung_up)
        self.pipeline.close()
        if self._link is not None:
            self._link.abort()
