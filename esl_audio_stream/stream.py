"""One call's stream: the per-frame path and everything the call holds, released in one place.

A `Stream` owns its UDP socket, its FreeSWITCH port, its WebSocket, its resampler, its receive
greenlet, its first-audio timer and its stopper greenlet. `stop()` is the single way out, whatever
ends the stream (a command, the caller hanging up, the endpoint closing, daemon shutdown), and it
releases all of them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import gevent
import gevent.event

from . import events
from .commands import CommandError, Start
from .esl.connection import ESLError
from .link import Link
from .media.frames import Chunker, chunk_pattern
from .media.mix import FrameClock, Mixer
from .media.resample import make_resampler
from .media.unicast import UnicastEndpoint
from .player import Player
from .settings import SettingsError, StreamSettings
from .ws.client import WSError
from .ws.tls import make_ssl_context

if TYPE_CHECKING:
    from .config import DaemonConfig
    from .esl.connection import ESLConnection
    from .media.unicast import PortPool

log = logging.getLogger(__name__)

PTIME_MS = 20


class StreamHost(Protocol):
    """What a stream needs from the daemon that owns it."""

    config: DaemonConfig
    esl: ESLConnection
    ports: PortPool

    def fire(self, uuid: str, subclass: str, body: str) -> None: ...
    def call_state(self, uuid: str) -> events.CallState: ...
    def stream_ended(self, stream: Stream) -> None: ...


class Stream:
    """A call's audio on its way to one WebSocket endpoint."""

    def __init__(self, host: StreamHost, cmd: Start, channel_rate: int,
                 settings: StreamSettings | None = None) -> None:
        self.host = host
        self.uuid = cmd.uuid
        self.url = cmd.url
        self.mix = cmd.mix
        self.rate = cmd.rate
        self.metadata = cmd.metadata
        #: The daemon's configuration when the stream started: a reload (SIGHUP) is for new streams.
        self.config = host.config
        self.settings = settings or self.config.stream_defaults
        self.channel_rate = channel_rate  # 0: not known yet, taken from the first frame
        self.paused = False
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = 0
        self.malformed = 0
        self.cause = ""
        self.done = gevent.event.Event()
        self._stopping = False
        self._peer_close: tuple[int, str] | None = None
        self._fs_port = 0
        self._endpoint: UnicastEndpoint | None = None
        self._link: Link | None = None
        self._watcher = None  # libev io watcher: calls _on_readable for each datagram
        self._recv = None
        self._resampler = None
        self._resample = None
        self._chunker: Chunker | None = None
        self._mixing = cmd.mix != "mono"
        self._mixer: Mixer | None = None
        self._clock: FrameClock | None = None
        self._held: bytes | None = None  # a late frame whose slot the next arrival decides
        self._now = None
        self._player: Player | None = None
        self._cng_len = 0
        self._cng = self._silence = b""
        self._timer: gevent.Greenlet | None = None
        self._stopper: gevent.Greenlet | None = None
        self._pending_texts: list[str] = []  # send_text before the WebSocket is open
        self._started = gevent.event.Event()  # set once start() has finished, either way

    # -- start ------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect the endpoint, then ask FreeSWITCH for the call's audio. Raises CommandError
        (with everything already released) when the stream cannot start."""
        cfg = self.config
        st = self.settings
        try:
            ssl_context = make_ssl_context(st) if self.url.startswith("wss:") else None
        except SettingsError as exc:  # unusable TLS files: libwsc's TLS_INIT_FAILED
            self._fire(events.ERROR, events.error_body(events.WS_TLS_INIT_FAILED, str(exc)))
            self._fail()
            raise CommandError(str(exc)) from None
        try:
            self._fs_port = self.host.ports.take()
            self._endpoint = UnicastEndpoint(cfg.media_host, cfg.fs_media_host, self._fs_port)
        except (RuntimeError, OSError) as exc:
            self._fail()
            raise CommandError(f"cannot open a media port: {exc}") from None
        channels = 2 if self.mix == "stereo" else 1
        self._link = link = Link(
            self.url,
            uuid=self.uuid,
            fire=self._fire,
            on_text=self._on_text,
            on_binary=self._on_binary,
            on_gone=self._on_gone,
            metadata=self.metadata,
            reconnect=st.reconnect,
            backlog_bytes=int(cfg.reconnect_buffer_seconds * self.rate) * 2 * channels,
            headers=st.extra_headers,
            deflate=st.deflate,
            heartbeat=st.heartbeat,
            ssl_context=ssl_context,
            connect_timeout=cfg.ws_connect_timeout,
            close_timeout=cfg.ws_close_timeout,
        )
        for text in self._pending_texts:  # send_text while connecting: after the metadata
            link.send_text(text)
        self._pending_texts.clear()
        try:
            link.connect()
        except WSError as exc:
            self._fire(events.ERROR, events.error_body(
                exc.code, exc.message, http_status=exc.http_status))
            self._fail()
            raise CommandError(f"cannot connect to {self.url}: {exc.message}") from None
        if self._stopping:  # stopped (or hung up) while connecting
            link.close(1000, events.CLOSE_REASONS[1000])
            self._fail()
            raise CommandError("stopped while connecting")
        self._fire(events.CONNECT, events.connect_body())
        try:
            self.host.esl.sendmsg(self.uuid, self._endpoint.headers())
        except ESLError as exc:
            link.close(1000, "")
            self._fail()
            raise CommandError(f"unicast refused by FreeSWITCH: {exc}") from None
        sock = self._endpoint.sock
        self._recv = sock.recv
        self._watcher = gevent.get_hub().loop.io(sock.fileno(), 1)
        self._watcher.start(self._on_readable)
        self._timer = gevent.spawn_later(cfg.first_audio_timeout, self._no_audio)
        self._started.set()

    def _fail(self) -> None:
        """start() gave up: release everything; a stop() waiting for the start returns."""
        self._stopping = True
        self._release()
        self._started.set()
        self.done.set()

    # -- commands on a running stream -------------------------------------------------------

    def pause(self) -> None:
        """No audio is sent while paused; the WebSocket stays open (heartbeats go on)."""
        self.paused = True
        if self._chunker is not None:
            self._chunker.clear()

    def resume(self) -> None:
        """Audio restarts from the present moment: nothing held back is sent, and the resampler
        forgets the audio from before the pause."""
        if self._resampler is not None:
            self._resampler.reset()
        if self._chunker is not None:
            self._chunker.clear()
        self._held = None
        if self._clock is not None:
            self._clock.reset()  # a new timeline: the pause is not a hole to fill
        self.paused = False

    def send_text(self, text: str) -> None:
        """Send a text message now; while connecting or reconnecting it waits (after the
        metadata), in order with the audio."""
        link = self._link
        if link is None:
            self._pending_texts.append(text)
        elif not link.send_text(text):
            raise CommandError("the endpoint is not keeping up: text dropped")

    # -- the per-frame path ---------------------------------------------------------------------

    def _setup_frames(self, first_len: int) -> None:
        """Per-call work done once, on the first datagram: rate, mixer, resampler, chunker."""
        if not self.channel_rate:  # no read_rate variable: one datagram is one 20 ms frame
            self.channel_rate = first_len // 2 * (1000 // PTIME_MS)
        channels = 2 if self.mix == "stereo" else 1
        if self._mixing:
            self._mixer = Mixer(self.mix, first_len)
            self._clock = FrameClock(PTIME_MS / 1000)
            self._now = gevent.get_hub().loop.now
        self._resampler = make_resampler(self.channel_rate, self.rate, channels)
        self._resample = self._resampler.process if self._resampler is not None else None
        self._chunker = Chunker(chunk_pattern(self.rate, self.settings.buffer_ms, channels))

    def _next_played(self) -> bytes | None:
        """The frame the call hears from the daemon's playback in this slot (None: silence);
        written to FreeSWITCH now, so playback is paced by FreeSWITCH's own clock."""
        player = self._player
        return player.next_frame() if player is not None else None

    def _mix_frame(self, frame: bytes) -> None:
        """stereo / mixed: pair each caller frame with what the call hears in the same slot.
        FrameClock puts lost frames back as silence, so the two sides never drift apart."""
        mixer, clock, emit, played = self._mixer, self._clock, self._emit, self._next_played
        combine = mixer.combine
        for _ in range(clock.arrive(self._now())):
            emit(combine(mixer.silence, played()))
        held = self._held
        if held is not None:
            self._held = None
            emit(combine(held, played()))
        if clock.holding:
            self._held = frame
        else:
            emit(combine(frame, played()))

    def _emit(self, frame: bytes) -> None:
        """One channel-rate frame (mono, interleaved stereo or mixed) on to the endpoint."""
        resample = self._resample
        chunker = self._chunker
        chunker.push(resample(frame) if resample is not None else frame)
        send = self._link.send
        while (chunk := chunker.pop()) is not None:
            if send(chunk):
                self.frames_out += 1
            else:
                self.dropped += 1

    def _on_readable(self) -> None:
        """One FreeSWITCH frame -> (CNG to silence) -> [mix] -> resample -> N-ms chunks -> link.

        Called by the event loop itself (a libev io watcher), not by a greenlet: no greenlet
        switch and one recv per frame. It must never block, and never raise into the hub.
        """
        try:
            data = self._recv(8192)
        except (BlockingIOError, InterruptedError, ConnectionRefusedError):
            return
        except OSError as exc:
            self._frame_path_failed(exc)
            return
        n = len(data)
        if n & 1 or not n:
            self.malformed += 1
            return
        if data[0] == 0xFF:
            if n != self._cng_len:
                self._cng_len, self._cng, self._silence = n, b"\xff" * n, bytes(n)
            if data == self._cng:  # FreeSWITCH sends comfort noise as 0xFF bytes
                data = self._silence
        self.frames_in += 1
        if self.paused:
            return
        try:
            if self._chunker is None:
                self._setup_frames(n)
            if self._mixing:
                self._mix_frame(data)
            else:
                self._emit(data)
                player = self._player
                if player is not None and player.queue.playing:
                    player.next_frame()
        except Exception as exc:
            self._frame_path_failed(exc)

    def _frame_path_failed(self, exc: BaseException) -> None:
        log.error("%s: audio path failed: %s", self.uuid, exc)
        if self._watcher is not None:
            self._watcher.stop()
        self.stop_async("error")

    def _no_audio(self) -> None:
        if self.frames_in == 0 and not self._stopping:
            self.host.fire(self.uuid, events.ERROR, events.error_body(
                events.WS_TIMEOUT,
                f"no audio from FreeSWITCH {self.host.config.first_audio_timeout:g} s after "
                f"start (is the channel parked? is local-port {self._fs_port} free?)"))

    # -- from the endpoint ------------------------------------------------------------------------

    def _on_text(self, text: str) -> None:
        if text.startswith("{") and '"type"' in text:  # cheap pre-check before JSON parsing
            player = self._get_player()
            if player is not None and player.on_text(text):
                return
        if not self.settings.suppress_log:
            log.info("%s: json from the endpoint: %s", self.uuid, text[:2000])
        self.host.fire(self.uuid, events.JSON, text)

    def _on_binary(self, data: bytes) -> None:
        player = self._get_player()
        if player is not None:
            player.on_binary(data)

    def _get_player(self) -> Player | None:
        """The call's player, made on the first audio from the endpoint."""
        if self._player is None and not self._stopping:
            rate = self.channel_rate
            if not rate or self._endpoint is None or self._link is None:
                self._fire(events.ERROR, events.error_body(
                    events.WS_PROTOCOL, "audio from the endpoint before the call's rate is "
                    "known: dropped"))
                return None
            cfg = self.config
            self._player = Player(
                self.uuid, write=self._endpoint.send, send_text=self._link.send_text,
                fire=self._fire, channel_rate=rate, stream_rate=self.rate,
                files_dir=cfg.files_dir, max_chunk_bytes=cfg.max_audio_bytes,
                suppress_log=self.settings.suppress_log, mode=self.settings.playback_mode,
                api=self.host.esl.api)
        return self._player

    def _fire(self, subclass: str, body: str) -> None:
        self.host.fire(self.uuid, subclass, body)

    def _on_gone(self, code: int, reason: str) -> None:
        """The endpoint closed normally (or reconnection is off or gave up): the stream ends."""
        if not self._stopping:
            self._peer_close = (code, reason)
            self.stop_async("endpoint-closed")

    # -- stop -------------------------------------------------------------------------------

    def stop_async(self, cause: str, text: str | None = None) -> None:
        """Stop from a greenlet that must not block (ESL reader, WebSocket reader)."""
        if self._stopper is None and not self._stopping:
            self._stopper = gevent.spawn(self.stop, cause, text)

    def stop(self, cause: str = "command", text: str | None = None) -> None:
        """Stop the audio, send the final text (the last message before the close), close the
        WebSocket (1000), fire the disconnect event, tear the unicast down and release
        everything. Idempotent; later callers wait for the first."""
        if not self._started.is_set():  # connecting: let start() see it and give up
            self._stopping = True
            self._started.wait(self.host.config.ws_connect_timeout + 1)
            self.done.wait(1)
            return
        if self._stopping:
            self.done.wait(self.host.config.ws_close_timeout + self.host.config.destroy_wait + 5)
            return
        self._stopping = True
        self.cause = cause
        try:
            if self._watcher is not None:
                self._watcher.stop()
            if self._timer is not None:
                self._timer.kill(block=False)
            link = self._link
            if self._peer_close is not None:  # the endpoint ended it
                code, reason = self._peer_close
                self._fire(events.DISCONNECT, events.disconnect_body(code, reason))
            elif link is not None and link.is_open:
                code, reason = 1000, events.CLOSE_REASONS[1000]
                link.close(code, reason, text)
                self._fire(events.DISCONNECT, events.disconnect_body(code, reason))
            elif link is not None:
                link.close()  # reconnecting: stop trying (the drop was reported when it came)
            self._teardown_unicast(cause)
        except Exception:
            log.exception("%s: error while stopping", self.uuid)
        finally:
            self._release()
            self.done.set()
            self.host.stream_ended(self)

    def _teardown_unicast(self, cause: str) -> None:
        """Make FreeSWITCH stop sending. Its unicast only ends when the channel leaves park, so a
        parked call that goes on is re-parked (`uuid_transfer <uuid> park inline`)."""
        if self._endpoint is not None:
            self._endpoint.end_write_back()
        if cause == "hangup" or self.host.call_state(self.uuid) is not events.CallState.PARKED:
            return
        try:
            self.host.esl.api(f"uuid_transfer {self.uuid} park inline")
        except ESLError as exc:
            log.warning("%s: could not end unicast: %s", self.uuid, exc)

    def _release(self) -> None:
        if self._player is not None:
            self._player.close(hung_up=self.cause == "hangup")
            self._player = None
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
            self._watcher = None
        if self._resampler is not None:
            self._resampler.close()
            self._resampler = self._resample = None
        if self._link is not None:
            self._link.abort()
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None
        if self._fs_port:
            self.host.ports.give(self._fs_port)
            self._fs_port = 0
