"""One call's stream: the per-frame path and everything the call holds, released in one place.

A `Stream` owns its UDP sockets, its FreeSWITCH ports, its tap channels, its WebSocket, its
resampler, its io watchers, its first-audio timer and its stopper greenlet. `stop()` is the single
way out, whatever ends the stream (a command, the caller hanging up, the endpoint closing, daemon
shutdown), and it releases all of them.

Where the audio comes from (`source`, see taps.py):
- `direct`: unicast on the call itself, which must be parked. Its datagrams are the caller's
  frames; they also pace the playback (write-back port, or the queue's clock for displace);
  stereo/mixed pair them with what the daemon plays (media/mix.py FrameClock).
- `taps`: one loopback tap for the read side and, for stereo/mixed, one for the write side,
  paired by media/align.py. Any call, bridged or running an application. The tap frames pace
  displace playback, whose audio the daemon adds to the write side itself (the taps were
  attached first, so FreeSWITCH leaves it out of them: media-bug order, facts file). Inject
  playback on a parked call goes through a unicast on the call itself, used only for its
  write-back port and clock; FreeSWITCH puts that audio in the write tap.
"""

from __future__ import annotations

import logging
import warnings
from time import monotonic, perf_counter
from typing import TYPE_CHECKING, Protocol

import gevent
import gevent.event

from ..app import events
from ..app.commands import CommandError, Start
from ..app.settings import SettingsError, StreamSettings
from ..app.tls import ssl_context_for
from ..esl.connection import ESLError
from ..media.align import READ as SIDE_READ
from ..media.align import WRITE as SIDE_WRITE
from ..media.align import TapAligner
from ..media.frames import Chunker, chunk_pattern
from ..media.mix import FrameClock, Mixer
from ..media.resample import make_resampler
from ..media.unicast import UnicastEndpoint
from ..ops.metrics import SAMPLE_MASK
from ..ws.errors import WSError
from .link import Link
from .player import Player
from .taps import READ, WRITE, Tap, TapError

if TYPE_CHECKING:
    from ..app.config import DaemonConfig
    from ..esl.connection import ESLConnection
    from ..media.unicast import PortPool
    from ..ops.metrics import Counters

with warnings.catch_warnings():  # stdlib audioop warns on 3.11/3.12; audioop-lts on >= 3.13
    warnings.simplefilter("ignore", DeprecationWarning)
    from audioop import add as _add

log = logging.getLogger(__name__)

PTIME_MS = 20


def _drain(sock) -> int:
    """Read and drop every datagram waiting in a non-blocking socket; how many there were."""
    n = 0
    try:
        while True:
            sock.recv(8192)
            n += 1
    except OSError:  # BlockingIOError: empty
        return n


def _nowhere(frame: bytes) -> bool:
    """The write-back of a stream that has none (taps with displace): never called."""
    return False


class StreamHost(Protocol):
    """What a stream needs from the daemon that owns it."""

    config: DaemonConfig
    esl: ESLConnection
    ports: PortPool
    counters: Counters

    def fire(self, uuid: str, subclass: str, body: str) -> None: ...
    def call_state(self, uuid: str) -> events.CallState: ...
    def stream_ended(self, stream: Stream) -> None: ...
    def tap_opened(self, tap_uuid: str, stream: Stream) -> None: ...
    def tap_closed(self, tap_uuid: str) -> None: ...


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
        self.started_at = monotonic()
        #: The last frame FreeSWITCH sent (held, not copied): the status page's level meter
        #: reads it a few times a second.
        self.last_frame = b""
        self._frame_time = host.counters.frame_time  # one frame in metrics.SAMPLE_EVERY timed
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
        self._parked = gevent.event.Event()  # CHANNEL_PARK seen (a re-park after a broadcast)
        self.restores = 0  # times the unicast was brought back after a broadcast
        self.source = "direct"  # or "taps": chosen at start (see the module docstring)
        self._taps: list[Tap] = []
        self._tap_watchers: list = []
        self._aligner: TapAligner | None = None
        self._wb_watcher = None  # taps + inject: the call's own unicast, for write-back only
        #: Whether the frames streamed also pace the playback (direct, or taps with displace);
        #: with taps and inject, the call's own unicast frames do.
        self._paced_here = True
        self._in_tap: set[object] = set()  # displaced files FreeSWITCH already puts in the tap
        self._taps_when_idle = False  # paused while playing: close the taps once it is over
        #: The one greenlet changing the taps in the background (making them again after one
        #: was killed, or closing them once a pause's playback is over); _release waits for it.
        self._tap_job: gevent.Greenlet | None = None
        self.tap_reopens = 0
        self.tap_frames_skipped = 0  # read-tap frames dropped while the taps were lined up

    # -- start ------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect the endpoint, then ask FreeSWITCH for the call's audio. Raises CommandError
        (with everything already released) when the stream cannot start."""
        cfg = self.config
        st = self.settings
        try:
            ssl_context = ssl_context_for(st) if self.url.startswith("wss:") else None
        except SettingsError as exc:  # unusable TLS files: libwsc's TLS_INIT_FAILED
            self._fire(events.ERROR, events.error_body(events.WS_TLS_INIT_FAILED, str(exc)))
            self._fail()
            raise CommandError(str(exc)) from None
        self.source = self._choose_source()
        if self.source == "taps":  # taps first: attached before anything can play
            try:
                self._open_taps()
            except TapError as exc:
                self._fire(events.ERROR, events.error_body(events.WS_PROTOCOL, str(exc)))
                self._fail()
                raise CommandError(str(exc)) from None
        else:
            try:
                self._fs_port = self.host.ports.take()
                self._endpoint = UnicastEndpoint(cfg.media_host, cfg.fs_media_host,
                                                 self._fs_port)
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
        if self._taps:
            self._watch_taps()
            self._started.set()
            return
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

    def _choose_source(self) -> str:
        """`direct` for mono on a parked call (the cheapest: one unicast), `taps` otherwise;
        STREAM_SOURCE overrides."""
        chosen = self.settings.source
        if chosen != "auto":
            return chosen
        parked = self.host.call_state(self.uuid) is events.CallState.PARKED
        return "direct" if parked and self.mix == "mono" else "taps"

    # -- taps -------------------------------------------------------------------------------

    def _open_taps(self) -> None:
        """Make the taps (read; and write for stereo/mixed) and wait for each one's first
        datagram: then they are attached, and their rate is known. Raises TapError with
        every tap already closed."""
        cfg = self.config
        host = self.host
        self._taps = [Tap(self.uuid, side) for side in
                      ((READ,) if self.mix == "mono" else (READ, WRITE))]
        try:
            for tap in self._taps:
                tap.open(host.esl, host.ports, cfg.media_host, cfg.fs_media_host)
                host.tap_opened(tap.uuid, self)
            rate = 0
            for tap in self._taps:
                try:
                    first = tap.endpoint.recv(8192, timeout=cfg.first_audio_timeout)
                except (TimeoutError, OSError):
                    raise TapError(f"no audio from the {tap.side} tap "
                                   f"{cfg.first_audio_timeout:g} s after it was made (is "
                                   f"mod_loopback loaded? is {self.uuid} up?)") from None
                rate = rate or len(first) // 2 * (1000 // PTIME_MS)
            # Each tap started on its own; the earlier one has frames queued from before the
            # later one's first. Drop them all: both then go on from now, within a frame of each
            # other, and pairing by count pairs frames of the same moment (the aligner takes
            # care of a leftover frame of difference).
            for tap in self._taps:
                skipped = 1 + _drain(tap.endpoint.sock)  # with the first
                if tap.side == READ:
                    self.tap_frames_skipped += skipped
        except BaseException:
            self._close_taps()
            raise
        if self._player is None:
            self.channel_rate = rate
        if self._player is not None and self._player.displacing is not None:
            self._in_tap = {self._player.displacing}  # started before these taps: in them
        else:
            self._in_tap = set()

    def _watch_taps(self) -> None:
        """io watchers for the taps: mono uses the ordinary per-frame path on the read tap;
        stereo/mixed one callback per side into the aligner."""
        loop = gevent.get_hub().loop
        if self.mix == "mono":
            sock = self._taps[0].endpoint.sock
            self._recv = sock.recv
            watcher = loop.io(sock.fileno(), 1)
            watcher.start(self._on_readable)
            self._tap_watchers.append(watcher)
            return
        for tap, callback in zip(self._taps, (self._on_tap_read, self._on_tap_write),
                                 strict=True):
            watcher = loop.io(tap.endpoint.sock.fileno(), 1)
            watcher.start(callback, tap.endpoint.sock.recv)
            self._tap_watchers.append(watcher)

    def _close_taps(self) -> None:
        for watcher in self._tap_watchers:
            watcher.stop()
            watcher.close()
        self._tap_watchers.clear()
        host = self.host
        for tap in self._taps:
            if tap.uuid:
                host.tap_closed(tap.uuid)
            tap.close(host.esl, host.ports)
        self._taps.clear()
        if self._aligner is not None:
            self._aligner.clear()

    def tap_gone(self, tap_uuid: str) -> None:
        """A tap channel hung up without us (killed by someone, or its B leg failed): make them
        again, unless the stream or the call is ending anyway."""
        if self._stopping or self._tap_job is not None or not self._taps:
            return
        self._tap_job = gevent.spawn(self._reopen_taps, tap_uuid)

    def _reopen_taps(self, tap_uuid: str) -> None:
        try:
            gevent.sleep(0.2)  # a hang-up of the call itself is seen first: then we stop
            if self._stopping or self.host.call_state(self.uuid) in (
                    events.CallState.HUNGUP, events.CallState.GONE):
                return
            self._fire(events.ERROR, events.error_body(
                events.WS_PROTOCOL, f"tap {tap_uuid} ended while the call goes on: making "
                                    "the taps again"))
            self._close_taps()
            try:
                self._open_taps()
            except TapError as exc:
                self._fire(events.ERROR, events.error_body(events.WS_PROTOCOL, str(exc)))
                self.stop_async("error")
                return
            self.tap_reopens += 1
            if not self._stopping:
                self._watch_taps()
            else:
                self._close_taps()
        finally:
            self._tap_job = None

    def _on_tap_read(self, recv) -> None:
        self._tap_frame(recv, SIDE_READ)

    def _on_tap_write(self, recv) -> None:
        self._tap_frame(recv, SIDE_WRITE)

    def _tap_frame(self, recv, side: int) -> None:
        """stereo/mixed from taps: one datagram of either side -> aligner -> pairs -> emit.
        Called by the event loop, like _on_readable: never blocks, never raises."""
        data = self._take(recv)
        if data is None:
            return
        n = len(data)
        t0 = 0.0
        if side == SIDE_READ:
            self.frames_in += 1
            self.last_frame = data
            if not self.frames_in & SAMPLE_MASK:  # the metrics' sampled frame time
                t0 = perf_counter()
        try:
            if self._chunker is None:
                self._setup_frames(n)
            aligner = self._aligner
            aligner.push(side, data)
            while (pair := aligner.pop()) is not None:
                self._tap_pair(pair[0], pair[1])
        except Exception as exc:
            self._frame_path_failed(exc)
        if t0:
            self._frame_time.observe(perf_counter() - t0)

    def _tap_pair(self, read: bytes, write: bytes) -> None:
        """One aligned slot: what the daemon plays this slot is added to the write side unless
        FreeSWITCH already has it there (inject: the write tap carries it)."""
        played = self._play_slot()
        if (played is not None and len(played) == len(write)
                and self._player.queue.tag not in self._in_tap):
            write = _add(write, played, 2)
        if self.paused:
            return
        self._emit(self._mixer.combine(read, write))

    def _play_slot(self) -> bytes | None:
        """This slot's frame of the playback, when the frames here pace it (None otherwise, or
        when nothing plays); once what played through a pause is over, the taps go."""
        player = self._player
        if player is not None and self._paced_here and player.queue.playing:
            return player.next_frame()
        if self._taps_when_idle:
            self._taps_when_idle = False
            self._spawn_pause_taps()
        return None

    def _spawn_pause_taps(self) -> None:
        if self._tap_job is None:
            self._tap_job = gevent.spawn(self._pause_taps)

    def _pause_taps(self) -> None:
        try:
            if self.paused and not self._stopping:
                self._close_taps()
        finally:
            self._tap_job = None

    def _on_write_back_clock(self) -> None:
        """taps + inject on a parked call: the call's own frames are only the clock that paces
        the write-back port (the read tap carries the same audio)."""
        try:
            self._endpoint.sock.recv(8192)
        except OSError:
            return
        player = self._player
        if player is not None and player.queue.playing:
            player.next_frame()

    def _fail(self) -> None:
        """start() gave up: release everything; a stop() waiting for the start returns."""
        self._stopping = True
        self._release()
        self._started.set()
        self.done.set()

    # -- commands on a running stream -------------------------------------------------------

    def pause(self) -> None:
        """No audio is sent while paused; the WebSocket stays open (heartbeats go on). Taps
        are closed (at once, or when what plays through them has played) and made again on
        resume, so none runs idle."""
        self.paused = True
        if self._chunker is not None:
            self._chunker.clear()
        if self._taps:
            player = self._player
            if player is not None and self._paced_here and player.queue.playing:
                self._taps_when_idle = True
            else:
                self._close_taps()

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
        self._taps_when_idle = False
        if self.source == "taps" and not self._taps and not self._stopping:
            try:
                self._open_taps()
            except TapError as exc:
                self._fire(events.ERROR, events.error_body(events.WS_PROTOCOL, str(exc)))
                raise CommandError(str(exc)) from None
            self._watch_taps()
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
            if self.source == "taps":
                self._aligner = TapAligner(first_len)
            else:
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
        out = resample(frame) if resample is not None else frame
        send = self._link.send
        if chunker.empty and len(out) == chunker.whole:  # one frame, one chunk: as it is
            if send(out):
                self.frames_out += 1
            else:
                self.dropped += 1
            return
        chunker.push(out)
        while (chunk := chunker.pop()) is not None:
            if send(chunk):
                self.frames_out += 1
            else:
                self.dropped += 1

    def _take(self, recv) -> bytes | None:
        """One datagram from FreeSWITCH, comfort noise (0xFF bytes) turned into silence; None
        when there is none, or it is not L16 (counted), or the socket failed (stream stops)."""
        try:
            data = recv(8192)
        except (BlockingIOError, InterruptedError, ConnectionRefusedError):
            return None
        except OSError as exc:
            self._frame_path_failed(exc)
            return None
        n = len(data)
        if n & 1 or not n:
            self.malformed += 1
            return None
        if data[0] == 0xFF:
            if n != self._cng_len:
                self._cng_len, self._cng, self._silence = n, b"\xff" * n, bytes(n)
            if data == self._cng:
                return self._silence
        return data

    def _on_readable(self) -> None:
        """One FreeSWITCH frame -> (CNG to silence) -> [mix] -> resample -> N-ms chunks -> link.

        Called by the event loop itself (a libev io watcher), not by a greenlet: no greenlet
        switch and one recv per frame. It must never block, and never raise into the hub.
        """
        data = self._take(self._recv)
        if data is None:
            return
        n = len(data)
        self.frames_in += 1
        if self.paused:  # nothing goes out, but what plays goes on playing
            self._play_slot()
            return
        self.last_frame = data
        t0 = perf_counter() if not self.frames_in & SAMPLE_MASK else 0.0
        try:
            if self._chunker is None:
                self._setup_frames(n)
            if self._mixing:
                self._mix_frame(data)
            else:
                self._emit(data)
                player = self._player
                if player is not None and self._paced_here and player.queue.playing:
                    player.next_frame()
        except Exception as exc:
            self._frame_path_failed(exc)
        if t0:
            self._frame_time.observe(perf_counter() - t0)

    def _frame_path_failed(self, exc: BaseException) -> None:
        log.error("%s: audio path failed: %s", self.uuid, exc)
        if self._watcher is not None:
            self._watcher.stop()
        for watcher in self._tap_watchers:
            watcher.stop()
        self.stop_async("error")

    def _no_audio(self) -> None:
        if self.frames_in == 0 and not self._stopping:
            self.host.fire(self.uuid, events.ERROR, events.error_body(
                events.WS_TIMEOUT,
                f"no audio from FreeSWITCH {self.config.first_audio_timeout:g} s after "
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
            if not rate or self._link is None or (self._endpoint is None and not self._taps):
                self._fire(events.ERROR, events.error_body(
                    events.WS_PROTOCOL, "audio from the endpoint before the call's rate is "
                    "known: dropped"))
                return None
            cfg = self.config
            mode = self.settings.playback_mode
            write = self._endpoint.send if self._endpoint is not None else _nowhere
            restore = self._restore_unicast if self._endpoint is not None else None
            if self.source == "taps":
                parked = self.host.call_state(self.uuid) is events.CallState.PARKED
                if not parked and mode != "displace":
                    # write-back and broadcast need a parked call: displace plays into any
                    log.info("%s: the call is not parked: playing by displace, not %s",
                             self.uuid, mode)
                    mode = "displace"
                if mode == "inject":
                    try:
                        write = self._open_write_back()
                    except (CommandError, ESLError) as exc:
                        self._fire(events.ERROR, events.error_body(
                            events.WS_PROTOCOL, f"no write-back port: {exc}; audio dropped"))
                        return None
                    self._paced_here = False
            self._player = Player(
                self.uuid, write=write, send_text=self._link.send_text,
                fire=self._fire, channel_rate=rate, stream_rate=self.rate,
                files_dir=cfg.files_dir, max_chunk_bytes=cfg.max_audio_bytes,
                suppress_log=self.settings.suppress_log, mode=mode,
                api=self.host.esl.api, restore=restore, files_group=cfg.files_group)
        return self._player

    def _open_write_back(self):
        """taps + inject: a unicast on the parked call itself, for its write-back port; its
        frames are the playback's clock (see _on_write_back_clock)."""
        cfg = self.config
        try:
            self._fs_port = self.host.ports.take()
            self._endpoint = UnicastEndpoint(cfg.media_host, cfg.fs_media_host, self._fs_port)
        except (RuntimeError, OSError) as exc:
            raise CommandError(f"cannot open a media port: {exc}") from None
        self.host.esl.sendmsg(self.uuid, self._endpoint.headers())
        self._wb_watcher = gevent.get_hub().loop.io(self._endpoint.sock.fileno(), 1)
        self._wb_watcher.start(self._on_write_back_clock)
        return self._endpoint.send

    def on_call_event(self, name: str, application: str, data: str) -> None:
        """A channel event of this call (the daemon passes the few that matter)."""
        if name == "CHANNEL_PARK":
            self._parked.set()
        player = self._player
        if player is not None:
            player.on_call_event(name, application, data)

    def _restore_unicast(self) -> None:
        """After a broadcast FreeSWITCH's unicast is gone for good; only a re-park and a new
        unicast bring it back (facts file). The same port and socket are used again."""
        if self._stopping or self._endpoint is None:
            return
        cfg = self.config
        self._parked.clear()
        try:
            self.host.esl.api(f"uuid_transfer {self.uuid} park inline")
            if not self._parked.wait(cfg.esl_timeout):
                raise ESLError("the call did not park again")
            if self._stopping or self._endpoint is None:
                return
            if self._clock is not None:
                self._clock.reset()  # the broadcast was a hole in the timeline, not loss
            self._held = None
            self.host.esl.sendmsg(self.uuid, self._endpoint.headers())
            self.restores += 1
        except ESLError as exc:
            log.error("%s: could not bring the stream back after a broadcast: %s", self.uuid, exc)
            self._fire(events.ERROR, events.error_body(
                events.WS_PROTOCOL, f"stream not restored after broadcast: {exc}"))

    def _fire(self, subclass: str, body: str) -> None:
        self.host.fire(self.uuid, subclass, body)

    def _on_gone(self, code: int, reason: str) -> None:
        """The endpoint closed normally (or reconnection is off or gave up): the stream ends."""
        if not self._stopping:
            self._peer_close = (code, reason)
            self.stop_async("endpoint-closed")

    # -- what status and metrics read (never on the per-frame path) ------------------------

    @property
    def state(self) -> str:
        """connecting, waiting (for FreeSWITCH's first frame), streaming, paused, reconnecting
        or stopping."""
        if self._stopping:
            return "stopping"
        if not self._started.is_set():
            return "connecting"
        link = self._link
        if link is None or not link.is_open:
            return "reconnecting"
        if self.paused:
            return "paused"
        return "streaming" if self.frames_in else "waiting"

    @property
    def dropped_total(self) -> int:
        """Audio messages dropped: refused sends plus the backlog's oldest-first drops."""
        link = self._link
        return self.dropped + (link.dropped_total if link is not None else 0)

    @property
    def reconnects(self) -> int:
        link = self._link
        return link.reconnects if link is not None else 0

    @property
    def bytes_out(self) -> int:
        """Bytes of audio handed to the link, from `frames_out` and the chunk sizes (which
        are fixed, or cycle in a fixed pattern), so the per-frame path counts nothing more."""
        pattern = chunk_pattern(self.rate, self.settings.buffer_ms,
                                2 if self.mix == "stereo" else 1)
        whole, part = divmod(self.frames_out, len(pattern))
        return whole * sum(pattern) + sum(pattern[:part])

    @property
    def playback_queued_seconds(self) -> float:
        player = self._player
        if player is None or not player.channel_rate:
            return 0.0
        return player.queue.queued_bytes / (2 * player.channel_rate)

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
            self._started.wait(self.config.ws_connect_timeout + 1)
            self.done.wait(1)
            return
        if self._stopping:
            self.done.wait(self.config.ws_close_timeout + self.config.destroy_wait + 5)
            return
        self._stopping = True
        self.cause = cause
        try:
            if self._watcher is not None:
                self._watcher.stop()
            for watcher in self._tap_watchers:
                watcher.stop()
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
        parked call that goes on is re-parked (`uuid_transfer <uuid> park inline`). Taps are
        killed in _release."""
        if self._endpoint is None:  # taps only: no unicast on the call itself
            return
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
        if self._wb_watcher is not None:
            self._wb_watcher.stop()
            self._wb_watcher.close()
            self._wb_watcher = None
        job = self._tap_job
        if job is not None and job is not gevent.getcurrent():
            # Let it finish (it sees _stopping and closes what it made) rather than kill it in
            # the middle of an originate whose tap channel would then be nobody's.
            cfg = self.config
            job.join(timeout=3 * cfg.esl_timeout + cfg.first_audio_timeout)
            job.kill(block=False)
        self._close_taps()
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
