"""Audio from the endpoint, played into the call: three strategies around the pure PlaybackQueue.

The endpoint's messages are decoded by the wire protocol (protocols/); a player is handed what
they mean -- `play(chunk)`, `mark(name)`, `clear()` -- and decides how FreeSWITCH plays it. The
stream paces it: one `next_frame()` per 20 ms slot of FreeSWITCH's own frames, so playback runs on
FreeSWITCH's clock, marks are answered when their audio has really been handed over, and stereo
or mixed streams get the very frame the caller hears in the same slot. One mechanism per call,
fixed at start: a write-side displace while frames go to the write-back port can leave a call
that cannot be killed, and a broadcast stops the unicast stream for good (facts file).

- `InjectPlayer` (the default): each frame is written to FreeSWITCH's unicast write-back port,
  which plays it at once. A clear is instant.
- `DisplacePlayer`: each chunk's file is played with `uuid_displace <uuid> start <file> 0 mux`
  when its first frame comes due, so FreeSWITCH mixes it into what the caller hears while the
  stream keeps flowing; the queue keeps the time (popped, not written). Clear is `uuid_displace
  <uuid> stop <file>`.
- `BroadcastPlayer` (call/broadcast.py): `uuid_broadcast` per chunk, back to back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from gevent.pool import Group

from ..app import events
from ..media.decode import Chunk
from ..media.files import CallFiles, play_event_body
from ..media.frames import PTIME_MS
from ..media.playback import PlaybackQueue
from ..media.resample import Resampler, make_resampler

log = logging.getLogger(__name__)

MAX_QUEUE_SECONDS = 60.0


class Player:
    """What all strategies share: files, the queue, marks, errors; subclasses play."""

    mode = ""
    #: Whether FreeSWITCH plays files (so every chunk is written to one).
    needs_files = True

    def __init__(self, uuid: str, *, fire: Callable[[str, str], None],
                 send_mark: Callable[[str, str], object], channel_rate: int,
                 files_dir: str | Path, files_group: str | None = None,
                 api: Callable[[str], str] | None = None, suppress_log: bool = False,
                 max_queue_seconds: float = MAX_QUEUE_SECONDS,
                 marks_changed: Callable[[], None] = lambda: None,
                 marks_when_heard: bool = False) -> None:
        self.uuid = uuid
        self._fire = fire
        self._send_mark = send_mark
        self.channel_rate = channel_rate
        self.suppress_log = suppress_log
        self._api = api
        self.max_queue_bytes = int(max_queue_seconds * channel_rate) * 2
        self.queue = PlaybackQueue(channel_rate * 2 * PTIME_MS // 1000, self.max_queue_bytes)
        self.files = CallFiles(files_dir, uuid, files_group)
        self._resamplers: dict[int, Resampler | None] = {}
        self._jobs = Group()  # FreeSWITCH commands under way (never run on the hub)
        self._on_idle: Callable[[], None] | None = None
        #: The marks waiting changed (the stream's record keeps them, for a restart to answer).
        self._marks_changed = marks_changed
        #: Answer a mark when its last frame has been heard (a slot after it was handed over,
        #: Twilio's "played"), not as it is handed over (mod_audio_stream's, kept as it was).
        self._when_heard = marks_when_heard
        self._heard: tuple[str, ...] = ()  # marks whose last frame plays in this slot
        self.frames_played = 0
        self.write_failures = 0
        self.chunks = 0
        #: Called when audio is queued (a native pump that carries the stream's frames gives
        #: them back first: each frame paces the playback from now on, native/pump.py).
        self.on_queued: Callable[[], None] | None = None

    # -- what the endpoint asked for (from the protocol) -------------------------------------

    def play(self, chunk: Chunk, announce: bool = False, queue: bool = True) -> None:
        """Queue a chunk after what plays. `announce`: it is a streamAudio message, whose file
        is named in a `mod_audio_stream::play` event (mod_audio_stream's behaviour); `queue`
        False: only that, the file is the application's to play (mod_audio_fork's playAudio)."""
        path = None
        if announce or (queue and self.needs_files):
            try:
                path = self.files.write(chunk)
            except OSError as exc:
                self.error(f"cannot write the audio file: {exc}")
                return
        if announce:
            body = play_event_body(chunk, path)  # type: ignore[arg-type]
            if not self.suppress_log:
                log.info("%s: play %s", self.uuid, body)  # never the base64
            self._fire(events.PLAY, body)
        if queue:
            self._queue(chunk, None if path is None else str(path))

    def mark(self, name: str) -> None:
        """Answered (`playout`) when all audio queued before it has played: at once when none
        is queued."""
        if self.queue.playing:
            self.queue.push_mark(name)
            self._marks_changed()
        elif self._heard:  # the last frame before it is still being heard
            self._heard += (name,)
        else:
            self._send_mark(name, "playout")

    @property
    def pending_marks(self) -> list[str]:
        """Marks not answered yet, in order."""
        return [*self._heard, *self.queue.marks()]

    def clear(self) -> None:
        """Barge-in: stop what plays, drop the queue; dropped marks are answered `cleared`."""
        self._answer_heard()  # their audio has been handed over: played
        names = self.queue.clear()
        for name in names:
            self._send_mark(name, "cleared")
        if names:
            self._marks_changed()
        for resampler in self._resamplers.values():
            if resampler is not None:
                resampler.reset()

    def interrupt(self) -> None:
        """Break what FreeSWITCH itself plays on the call (an application's playback, a
        broadcast): mod_audio_fork's killAudio sets CF_BREAK, which `uuid_break` does."""
        self._jobs.spawn(self._run, f"uuid_break {self.uuid}")

    def error(self, message: str) -> None:
        """An endpoint message that cannot be played: an error event; the stream goes on."""
        log.warning("%s: endpoint audio refused: %s", self.uuid, message)
        self._fire(events.ERROR, events.error_body(events.WS_PROTOCOL, message))

    def on_call_event(self, name: str, application: str, data: str) -> None:
        """FreeSWITCH's channel events for this call (only broadcast needs them)."""

    def when_idle(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` once, when what is queued has played (at once if nothing plays)."""
        if callback is not None and not self.playing:
            callback()
            return
        self._on_idle = callback

    def _queue(self, chunk: Chunk, path: str | None) -> None:
        rate = chunk.rate
        if rate not in self._resamplers:  # one per source rate: consecutive chunks stay seamless
            self._resamplers[rate] = make_resampler(rate, self.channel_rate)
        resampler = self._resamplers[rate]
        pcm = resampler.process(chunk.pcm) if resampler is not None else chunk.pcm
        if self.on_queued is not None:
            self.on_queued()
        if self.queue.push_audio(pcm, path):
            self.chunks += 1
        else:  # a flood: what is queued is kept, this chunk is not
            self.error(f"playback queue full ({self.queue.queued_bytes} bytes queued): a "
                       f"{chunk.duration:.2f} s chunk was dropped "
                       f"({self.queue.dropped_chunks} so far)")

    # -- per slot (called by the stream for every frame FreeSWITCH sends) -------------------

    @property
    def playing(self) -> bool:
        """Audio waits, or marks wait for their last frame to be heard: a slot is wanted."""
        return self.queue.queued_bytes > 0 or bool(self._heard)

    @property
    def queued_seconds(self) -> float:
        """Audio waiting to be played."""
        return self.queue.queued_bytes / (2 * self.channel_rate)

    @property
    def tag(self) -> object:
        """What the last frame played came from (its file, where there is one)."""
        return self.queue.tag

    @property
    def displacing(self) -> object:
        """The file FreeSWITCH is displacing into the call now, else None."""
        return None

    def next_frame(self) -> bytes | None:
        """The frame the call hears in this slot; marks it reaches are answered (or, when
        heard, in the next slot: when the last frame has been heard)."""
        if self._heard:
            self._answer_heard()
        frame, marks = self.queue.pop_frame()
        if frame is not None:
            self._played(frame)
        else:
            self._ran_dry()
        if marks:
            if self._when_heard and frame is not None:
                self._heard = marks
            else:
                for name in marks:
                    self._send_mark(name, "playout")
                self._marks_changed()
        if self._on_idle is not None and not self.queue.queued_bytes:
            callback, self._on_idle = self._on_idle, None
            self._answer_heard()  # no next slot may come (a pause closes the source)
            callback()
        return frame

    def _answer_heard(self) -> None:
        heard, self._heard = self._heard, ()
        if heard:
            for name in heard:
                self._send_mark(name, "playout")
            self._marks_changed()

    def _played(self, frame: bytes) -> None:
        self.frames_played += 1

    def _ran_dry(self) -> None:
        pass

    # -- FreeSWITCH commands -------------------------------------------------------------------

    def _run(self, command: str) -> bool:
        """One FreeSWITCH api command; a refusal is an error event (the stream goes on)."""
        if self._api is None:
            return False
        try:
            answer = self._api(command)
        except Exception as exc:  # ESL down or timed out
            answer = f"-ERR {exc}"
        # uuid_break prints nothing when it worked, which mod_event_socket turns into this
        if answer.startswith("-") and not answer.startswith("-ERR no reply"):
            name, _, args = command.partition(" ")
            self.error(f"{name} {args.partition(' ')[2]}: {answer.strip()}")
            return False
        return True

    def abandon(self) -> None:
        """A hand-over: the next process carries the stream on; nothing is asked of FreeSWITCH
        (what it plays now plays out) and the files are left to the next process."""
        self._jobs.kill(timeout=1)
        self.queue.clear()
        self._heard = ()  # the record keeps them: the next process answers them
        self._on_idle = None
        for resampler in self._resamplers.values():
            if resampler is not None:
                resampler.close()
        self._resamplers.clear()

    def close(self, hung_up: bool = False) -> None:
        """Stop, hang-up, shutdown: nothing queued survives, no file is left (FreeSWITCH is
        told to stop playing first, so it never reads a removed file)."""
        self._jobs.kill(timeout=1)
        self._stop_playing(hung_up)
        self.queue.clear()
        self._heard = ()
        self._on_idle = None
        for resampler in self._resamplers.values():
            if resampler is not None:
                resampler.close()
        self._resamplers.clear()
        self.files.remove_all()

    def _stop_playing(self, hung_up: bool) -> None:
        pass


class InjectPlayer(Player):
    """Frames written to FreeSWITCH's unicast write-back port, one per slot."""

    mode = "inject"
    needs_files = False

    def __init__(self, uuid: str, *, write: Callable[[bytes], bool], **kwargs) -> None:
        super().__init__(uuid, **kwargs)
        self._write = write

    def _played(self, frame: bytes) -> None:
        if self._write(frame):
            self.frames_played += 1
        else:
            self.write_failures += 1


class DisplacePlayer(Player):
    """Each chunk's file displaced into what the caller hears when its first frame comes due."""

    mode = "displace"

    def __init__(self, uuid: str, **kwargs) -> None:
        super().__init__(uuid, **kwargs)
        self._displacing: object = None  # the file FreeSWITCH is displacing now

    @property
    def displacing(self) -> object:
        return self._displacing

    def _played(self, frame: bytes) -> None:
        self.frames_played += 1
        tag = self.queue.tag
        if tag is not self._displacing:  # a new chunk comes due: play its file
            self._displacing = tag
            self._jobs.spawn(self._displace, "start", tag)

    def _ran_dry(self) -> None:
        self._displacing = None  # FreeSWITCH ends a displace by itself at the file's end

    def clear(self) -> None:
        super().clear()
        if self._displacing is not None:
            self._jobs.spawn(self._displace, "stop", self._displacing)
            self._displacing = None

    def _displace(self, action: str, path: object) -> None:
        self._run(f"uuid_displace {self.uuid} {action} {path}"
                  + (" 0 mux" if action == "start" else ""))

    def _stop_playing(self, hung_up: bool) -> None:
        if self._displacing is not None and not hung_up:
            self._displace("stop", self._displacing)
        self._displacing = None
