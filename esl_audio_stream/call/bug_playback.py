"""What the two sources fed by a media bug on the call share: `record` (a recording into a FIFO)
and `taps` (loopback taps). Their frames are the call's own sides, so they pace displace
playback, and the daemon adds the displaced audio to the write side itself unless FreeSWITCH
already has it there (`_in_bug`: files that were playing when the bug was made, read by the
pipeline). Inject on a parked call goes through the call's own unicast (`WriteBackPort`), whose
audio FreeSWITCH puts in the bug's frames. A pause ends the bug at once, or once what plays
through it has played, in the one background job the source owns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import gevent

from .direct import WriteBackPort
from .lease import LeaseError
from .sources import Playback, SourceEnv, SourceError

if TYPE_CHECKING:
    from ..app.resume import StreamRecord
    from .player import Player

log = logging.getLogger(__name__)


class BugPlayback:
    """Playback and pausing for a source whose frames come from a media bug on the call.
    Subclasses set `env`, `_on_moved` and call `_init_playback()`; they provide `_halt()` (end
    the bug now: stop the recording, close the taps)."""

    env: SourceEnv
    _on_moved: Callable[[], None]
    #: a pause's background job also says the source moved (the record names the FIFO)
    _moved_after_pause = False

    def _init_playback(self) -> None:
        self._player: Player | None = None
        self._paced_here = True  # whether the bug's frames pace the player (not inject)
        #: displaced files FreeSWITCH already puts in the bug's frames (playing when it was
        #: made); the pipeline reads this very set
        self._in_bug: set[object] = set()
        self._write_back: WriteBackPort | None = None
        #: The one greenlet changing the bug in the background (making it again after it
        #: ended, or ending it once a pause's playback is over); close() waits for it.
        self._job: gevent.Greenlet | None = None
        self._closing = False
        self._paused = False

    def _halt(self) -> None:
        raise NotImplementedError

    # -- playback ---------------------------------------------------------------------------

    def attach(self, player: Player) -> None:
        self._player = player

    def playback(self, mode: str) -> Playback:
        """A call that is not parked is played to by displace (write-back exists only on a
        parked unicast channel, and broadcast would leave the call); inject on a parked call
        goes through a unicast on the call itself (`WriteBackPort`). Raises SourceError."""
        env = self.env
        if not env.parked() and mode != "displace":
            log.info("%s: the call is not parked: playing by displace, not %s", env.uuid, mode)
            mode = "displace"
        if mode == "inject":
            port = self._write_back  # carried on from a previous process, or made now
            if port is None:
                port = WriteBackPort(env, self._tick, on_moved=self._on_moved)
                try:
                    port.start()
                except LeaseError as exc:
                    raise SourceError(f"no write-back port: {exc}") from None
                self._write_back = port
                self._on_moved()
            self._paced_here = False
            return Playback(mode, write=port.write, paced_here=False)
        return Playback(mode, in_tap=self._in_bug)

    def _tick(self) -> None:
        """The write-back port's frame: the slot clock of inject playback."""
        player = self._player
        if player is not None and player.playing:
            player.next_frame()

    def give_write_back(self) -> WriteBackPort | None:
        """The write-back port, for the richer source replacing this one (call/call_audio.py)."""
        port, self._write_back = self._write_back, None
        return port

    def take_write_back(self, port: WriteBackPort) -> None:
        """The write-back port of the source this one replaces: its frames tick this one's
        playback from now on."""
        port.retarget(self._tick)
        self._write_back = port
        self._paced_here = False

    def _adopt_write_back(self, record: StreamRecord) -> None:
        """The write-back port a previous process left (crash-only), carried on if it can be."""
        if not record.fs_port:
            return
        env = self.env
        port = WriteBackPort(env, self._tick, on_moved=self._on_moved)
        try:
            port.adopt(record.fs_port, record.udp_port)
        except LeaseError as exc:
            log.warning("%s: the write-back port was not carried on: %s", env.uuid, exc)
        else:
            self._write_back = port
            self._paced_here = False

    def _write_back_ports(self) -> tuple[int, int]:
        return self._write_back.ports if self._write_back is not None else (0, 0)

    # -- the end ----------------------------------------------------------------------------

    def _end_job(self, wait: bool) -> None:
        """Closing: the background job ends. Waited for (`wait`: it sees the close and undoes
        what it made, rather than be killed in the middle of an api call whose bug would then
        be nobody's), or killed (a hand-over: the next process carries the bug on)."""
        self._closing = True
        job = self._job
        if job is not None and job is not gevent.getcurrent():
            if wait:
                env = self.env
                job.join(timeout=3 * env.esl_timeout + env.first_audio_timeout)
            job.kill(block=False)

    def _release_write_back(self, hung_up: bool | None) -> None:
        """The write-back port closed (`hung_up` as for close), or left to the next process
        (None: a hand-over)."""
        port, self._write_back = self._write_back, None
        if port is not None:
            if hung_up is None:
                port.hand_over()
            else:
                port.close(hung_up)

    # -- pause ------------------------------------------------------------------------------

    def pause(self) -> None:
        """The bug is ended (at once, or once what plays through it has played) and made
        again on resume, so none runs for nothing."""
        self._paused = True
        player = self._player
        if player is not None and self._paced_here and player.playing:
            player.when_idle(self._idle)
        else:
            self._halt()

    def _idle(self) -> None:
        """What played through a pause is over (called from the per-frame path: no waiting)."""
        if self._job is None:
            self._job = gevent.spawn(self._pause_later)

    def _pause_later(self) -> None:
        try:
            if self._paused and not self._closing:
                self._halt()
                if self._moved_after_pause:
                    self._on_moved()
        finally:
            self._job = None

    def _resuming(self) -> bool:
        """The player's pause hook undone; whether the bug may be made again now."""
        self._paused = False
        if self._player is not None:
            self._player.when_idle(None)
        return not self._closing
