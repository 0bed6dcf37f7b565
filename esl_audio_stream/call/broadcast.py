"""Broadcast playback (`STREAM_PLAYBACK_MODE=broadcast`, the design card's): `uuid_broadcast`
per chunk, one after another, each started when FreeSWITCH says the previous one ended (the
CHANNEL_EXECUTE_COMPLETE of its `playback`).

FreeSWITCH stops the unicast stream for good while a broadcast plays (facts file), so the caller
is NOT streamed meanwhile; once nothing is left to play the player asks the stream to bring it
back (`restore`: re-park, new unicast). Marks are answered when the broadcast before them has
ended; clear is `uuid_break <uuid> all`. No frames flow while it plays, so the playback queue
is not used: files and marks wait in a queue of their own, bounded like it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import gevent

from ..media.decode import Chunk
from .player import Player

#: How long past a broadcast file's duration the player waits for FreeSWITCH to say it ended.
BROADCAST_GRACE = 10.0


class BroadcastPlayer(Player):
    mode = "broadcast"

    def __init__(self, uuid: str, *, restore: Callable[[], None] | None = None,
                 **kwargs) -> None:
        super().__init__(uuid, **kwargs)
        # files and marks waiting, the file FreeSWITCH plays now, and how to bring the stream
        # back once nothing is left to play
        self._pending: deque[tuple[bool, str, int]] = deque()  # (is_mark, path|name, bytes)
        self._pending_bytes = 0
        self._max_pending = self.max_queue_bytes
        self._broadcasting: str | None = None
        self._restore = restore
        self._suspended = False  # a broadcast stopped the stream; restore it when idle
        self.broadcasts = 0

    @property
    def playing(self) -> bool:
        return False  # nothing to pop per slot: FreeSWITCH plays the files itself

    @property
    def queued_seconds(self) -> float:
        return self._pending_bytes / (2 * self.channel_rate)

    def mark(self, name: str) -> None:
        self._pending.append((True, name, 0))
        if self._broadcasting is None:
            self._broadcast_next()
        else:
            self._marks_changed()

    @property
    def pending_marks(self) -> list[str]:
        return [item for is_mark, item, _ in self._pending if is_mark]

    def _queue(self, chunk: Chunk, path: str | None) -> None:
        size = int(chunk.duration * self.channel_rate) * 2  # as the other modes count it
        if path is None:
            return
        if self._pending_bytes + size > self._max_pending:
            self.queue.dropped_chunks += 1
            self.files.remove(path)
            self.error(f"playback queue full ({self._pending_bytes} bytes queued): a "
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
        answered = False
        while pending and pending[0][0]:
            self._send_mark(pending.popleft()[1], "playout")
            answered = True
        if answered:
            self._marks_changed()
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
            self.error(f"uuid_broadcast {path}: FreeSWITCH never said it ended; going on")
        if self._broadcasting == path:
            self._broadcast_ended(path)

    def on_call_event(self, name: str, application: str, data: str) -> None:
        """A broadcast ends with the CHANNEL_EXECUTE_COMPLETE of its `playback` (fired even
        when the file would not play, unlike PLAYBACK_STOP)."""
        if (name == "CHANNEL_EXECUTE_COMPLETE" and application == "playback"
                and data == self._broadcasting):
            self._broadcast_ended(data)

    def _broadcast_ended(self, path: str) -> None:
        self._broadcasting = None
        self.broadcasts += 1
        self.files.remove(path)
        self._broadcast_next()

    def clear(self) -> None:
        super().clear()
        for is_mark, item, _ in self._pending:
            if is_mark:
                self._send_mark(item, "cleared")
            else:
                self.files.remove(item)
        self._pending.clear()
        self._pending_bytes = 0
        if self._broadcasting is not None:  # its end comes as an event: then the restore
            self._jobs.spawn(self._run, f"uuid_break {self.uuid} all")

    def _stop_playing(self, hung_up: bool) -> None:
        if self._broadcasting is not None and not hung_up:
            self._run(f"uuid_break {self.uuid} all")
        self._broadcasting = None
        self._pending.clear()
