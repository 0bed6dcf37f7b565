"""Audio from the endpoint, played into the call: the shell around media/playback.py.

Mode `inject` (the default): each frame is written to FreeSWITCH's
unicast write-back port, which plays it at once (facts file). Pacing comes for free and exactly:
the stream asks for one frame per frame it receives from FreeSWITCH (`next_frame`), so playback
runs on FreeSWITCH's own 20 ms clock, the outgoing stream never stops, a clear is instant, marks
fire when their audio has really been handed to FreeSWITCH, and stereo/mixed get the very frame
the caller hears in the same slot.

Mode `displace` (`STREAM_PLAYBACK_MODE=displace`): each chunk's file is played with
`uuid_displace <uuid> start <file> 0 mux` when its first frame comes due, so FreeSWITCH mixes it
into what the caller hears while the stream keeps flowing; clear is `uuid_displace <uuid> stop
<file>`. The same queue keeps the time (it is popped but not written), so marks and the right
channel of stereo/mixed still follow what plays, slot by slot.

Mode `broadcast` (`STREAM_PLAYBACK_MODE=broadcast`, the design card's): each chunk's file is
played with `uuid_broadcast <uuid> <file> aleg`, one after another, each started when FreeSWITCH
says the previous one ended (CHANNEL_EXECUTE_COMPLETE of its `playback`). FreeSWITCH stops the
unicast stream for good while a broadcast plays (facts file), so the caller is NOT streamed
meanwhile; when the queue is empty the player asks the stream to bring it back (`restore`: re-park,
new unicast). Marks are answered when the broadcast before them has ended; clear is
`uuid_break <uuid> all`. No frames flow while it plays, so there is nothing for stereo/mixed.

One mechanism per call, never two: a write-side displace while frames go to the write-back port
can leave a call that cannot be killed, and `uuid_broadcast` stops the unicast stream for good
(facts file). The mode is fixed when the stream starts.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path

import gevent
from gevent.pool import Group

from ..app import events
from ..media.decode import (
    Chunk,
    DecodeError,
    decode_binary,
    decode_stream_audio,
    mark_name,
    parse_message,
)
from ..media.files import CallFiles, play_event_body
from ..media.playback import PlaybackQueue
from ..media.resample import Resampler, make_resampler

log = logging.getLogger(__name__)

#: How long past a broadcast file's duration the player waits for FreeSWITCH to say it ended.
BROADCAST_GRACE = 10.0

_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Player:
    def __init__(
        self,
        uuid: str,
        *,
        write: Callable[[bytes], bool],
        send_text: Callable[[str], bool],
        fire: Callable[[str, str], None],
        channel_rate: int,
        stream_rate: int,
        files_dir: str | Path,
        max_chunk_bytes: int = 8 << 20,
        max_queue_seconds: float = 60.0,
        suppress_log: bool = False,
        mode: str = "inject",
        api: Callable[[str], str] | None = None,
        restore: Callable[[], None] | None = None,
        files_group: str | None = None,
    ) -> None:
        self.uuid = uuid
        self._write = write
        self._send_text = send_text
        self._fire = fire
        self.channel_rate = channel_rate
        self.stream_rate = stream_rate
        self.max_chunk_bytes = max_chunk_bytes
        self.suppress_log = suppress_log
        frame_bytes = channel_rate * 2 // 50
        self.queue = PlaybackQueue(frame_bytes, int(max_queue_seconds * channel_rate) * 2)
        self.files = CallFiles(files_dir, uuid, files_group)
        self._resamplers: dict[int, Resampler | None] = {}
        self.frames_played = 0
        self.write_failures = 0
        self.chunks = 0
        self.mode = mode
        self._api = api
        self._jobs = Group()  # FreeSWITCH commands under way (never run on the hub), restores
        self._displacing: object = None  # the file FreeSWITCH is displacing now
        # broadcast mode: files and marks waiting, the file FreeSWITCH plays now, and how to
        # bring the stream back once nothing is left to play
        self._pending: deque[tuple[bool, str, int]] = deque()  # (is_mark, path|name, bytes)
        self._pending_bytes = 0
        self._max_pending = int(max_queue_seconds * channel_rate) * 2
        self._broadcasting: str | None = None
        self._restore = restore
        self._suspended = False  # a broadcast stopped the stream; restore it when idle
        self.broadcasts = 0

    # -- from the endpoint ----------------------------------------------------------------

    def on_text(self, text: str) -> bool:
        """Handle a playback message; False when `text` is not one (the caller relays it)."""
        parsed = parse_message(text)
        if parsed is None:
            return False
        kind, data = parsed
        if kind == "streamAudio":
            self._stream_audio(data)
        elif kind in ("killAudio", "clear"):
            self.clear()
        elif kind == "mark":
            try:
                name = mark_name(data)
            except DecodeError as exc:
                self._error(str(exc))
                return True
            if self.mode == "broadcast":
                self._pending.append((True, name, 0))
                if self._broadcasting is None:
                    self._broadcast_next()
            else:
                self.queue.push_mark(name)
        return True

    def on_binary(self, payload: bytes) -> None:
        """Raw L16 at the stream's rate, queued in arrival order (a file only when FreeSWITCH
        must play one: displace mode)."""
        try:
            chunk = decode_binary(payload, self.stream_rate, max_bytes=self.max_chunk_bytes)
        except DecodeError as exc:
            self._error(str(exc))
            return
        if self.mode == "inject":
            self._queue(chunk)
        elif (path := self._write_file(chunk)) is not None:
            self._queue(chunk, str(path))

    def _stream_audio(self, data: dict) -> None:
        try:
            chunk = decode_stream_audio(data, max_bytes=self.max_chunk_bytes)
        except DecodeError as exc:
            self._error(str(exc))
            return
        path = self._write_file(chunk)
        if path is None:
            return
        body = play_event_body(chunk, path)
        if not self.suppress_log:
            log.info("%s: play %s", self.uuid, body)  # never the base64
        self._fire(events.PLAY, body)
        self._queue(chunk, str(path))

    def _write_file(self, chunk: Chunk) -> Path | None:
        try:
            return self.files.write(chunk)
        except OSError as exc:
            self._error(f"cannot write the audio file: {exc}")
            return None

    def _queue(self, chunk: Chunk, path: str | None = None) -> None:
        if self.mode == "broadcast":
            self._queue_broadcast(chunk, path)
            return
        rate = chunk.rate
        if rate not in self._resamplers:  # one per source rate: consecutive chunks stay seamless
            self._resamplers[rate] = make_resampler(rate, self.channel_rate)
        resampler = self._resamplers[rate]
        pcm = resampler.process(chunk.pcm) if resampler is not None else chunk.pcm
        if self.queue.push_audio(pcm, path):
            self.chunks += 1
        else:  # a flood: what is queued is kept, this chunk is not
            self._error(f"playback queue full ({self.queue.queued_bytes} bytes queued): a "
                        f"{chunk.duration:.2f} s chunk was dropped "
                        f"({self.queue.dropped_chunks} so far)")

    # -- broadcast mode ----------------------------------------------------------------------

    def _queue_broadcast(self, chunk: Chunk, path: str | None) -> None:
        size = int(chunk.duration * self.channel_rate) * 2  # as the other modes count it
        if path is None:
            return
        if self._pending_bytes + size > self._max_pending:
            self.queue.dropped_chunks += 1
            self.files.remove(path)
            self._error(f"playback queue full ({self._pending_bytes} bytes queued): a "
                        f"{chunk.duration:.2f} s chunk was dropped "
                        f"({self.queue.dropped_chunks} so far)")
            return
        self._pending.append((False, path, size))
        self._pending_bytes += size
        self.chunks += 1
        if self._broadcasting is None:
            self._broadcast_next()

    def _broadcast_next(self) -> None:
        """Answer the marks now due, then start the next file; with nothing left, bring the
        stream back."""
        pending = self._pending
        while pending and pending[0][0]:
            self._send_mark(pending.popleft()[1], "playout")
        if not pending:
            if self._suspended:
                self._suspended = False
                if self._restore is not None:
                    self._jobs.spawn(self._restore)
            return
        _, path, size = pending.popleft()
        self._pending_bytes -= size
        self._broadcasting = path
        self._jobs.spawn(self._broadcast, path, size / (2 * self.channel_rate))

    def _broadcast(self, path: str, seconds: float) -> None:
        # Marked before the command: its end event can come before this greenlet runs again.
        was, self._suspended = self._suspended, True  # FreeSWITCH stops the stream (facts)
        if not self._run(f"uuid_broadcast {self.uuid} {path} aleg"):
            self._suspended = was
        else:  # its end is an event; if that never comes (ESL lost meanwhile), don't wait forever
            gevent.sleep(seconds + BROADCAST_GRACE)
            if self._broadcasting != path:
                return
            self._error(f"uuid_broadcast {path}: FreeSWITCH never said it ended; going on")
        if self._broadcasting == path:
            self._broadcast_ended(path)

    def on_call_event(self, name: str, application: str, data: str) -> None:
        """FreeSWITCH's channel events for this call: a broadcast ends with the
        CHANNEL_EXECUTE_COMPLETE of its `playback` (fired even when the file would not play,
        unlike PLAYBACK_STOP)."""
        if (name == "CHANNEL_EXECUTE_COMPLETE" and application == "playback"
                and data == self._broadcasting):
            self._broadcast_ended(data)

    def _broadcast_ended(self, path: str) -> None:
        self._broadcasting = None
        self.broadcasts += 1
        self.files.remove(path)
        self._broadcast_next()

    def _send_mark(self, name: str, event: str) -> None:
        self._send_text(_compact({"type": "mark", "data": {"name": name, "event": event}}))

    def _error(self, message: str) -> None:
        log.warning("%s: endpoint audio refused: %s", self.uuid, message)
        self._fire(events.ERROR, events.error_body(events.WS_PROTOCOL, message))

    # -- per slot (called by the stream for every frame FreeSWITCH sends) -------------------

    @property
    def displacing(self) -> object:
        """The file FreeSWITCH is displacing into the call now (displace mode), else None."""
        return self._displacing

    @property
    def playing(self) -> bool:
        return self.queue.playing

    def next_frame(self) -> bytes | None:
        """The frame the call hears in this slot: written to FreeSWITCH now; marks it reaches
        are reported to the endpoint."""
        queue = self.queue
        frame, marks = queue.pop_frame()
        if frame is not None:
            if self.mode == "inject":
                if self._write(frame):
                    self.frames_played += 1
                else:
                    self.write_failures += 1
            else:
                self.frames_played += 1
                if queue.tag is not self._displacing:  # a new chunk comes due: play its file
                    self._displacing = queue.tag
                    self._jobs.spawn(self._displace, "start", queue.tag)
        elif self._displacing is not None:
            self._displacing = None  # FreeSWITCH ends a displace by itself at the file's end
        for name in marks:
            self._send_mark(name, "playout")
        return frame

    def clear(self) -> None:
        """Barge-in: stop what plays, drop the queue; dropped marks are reported `cleared`."""
        for name in self.queue.clear():
            self._send_mark(name, "cleared")
        if self.mode == "broadcast":
            for is_mark, item, _ in self._pending:
                if is_mark:
                    self._send_mark(item, "cleared")
                else:
                    self.files.remove(item)
            self._pending.clear()
            self._pending_bytes = 0
            if self._broadcasting is not None:  # its end comes as an event: then the restore
                self._jobs.spawn(self._run, f"uuid_break {self.uuid} all")
        if self._displacing is not None:
            self._jobs.spawn(self._displace, "stop", self._displacing)
            self._displacing = None
        for resampler in self._resamplers.values():
            if resampler is not None:
                resampler.reset()

    def _displace(self, action: str, path: object) -> None:
        self._run(f"uuid_displace {self.uuid} {action} {path}"
                  + (" 0 mux" if action == "start" else ""))

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
            self._error(f"{name} {args.partition(' ')[2]}: {answer.strip()}")
            return False
        return True

    def close(self, hung_up: bool = False) -> None:
        """Stop, hang-up, shutdown: nothing queued survives, no file is left (FreeSWITCH is
        told to stop displacing or broadcasting first, so it never reads a removed file)."""
        self._jobs.kill(timeout=1)
        if self._displacing is not None and not hung_up:
            self._displace("stop", self._displacing)
        self._displacing = None
        if self._broadcasting is not None and not hung_up:
            self._run(f"uuid_break {self.uuid} all")
        self._broadcasting = None
        self._pending.clear()
        self.queue.clear()
        for resampler in self._resamplers.values():
            if resampler is not None:
                resampler.close()
        self._resamplers.clear()
        self.files.remove_all()
