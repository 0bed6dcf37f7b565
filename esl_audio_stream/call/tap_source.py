"""The `taps` source: loopback taps of any call -- bridged, in an application, or parked -- read
and paired, made again when one is killed, closed on pause, adopted after a restart.

unicast only streams a parked channel, and only what it reads; a tap (call/taps.py) is a parked
loopback channel of its own that carries what the call reads (`read`) or writes (`write`).
Mono is the read tap; stereo and mixed are both, paired by count (media/align.py, in the
pipeline). The tap frames pace displace playback; inject on a parked call goes through the
call's own unicast (`WriteBackPort`), whose audio FreeSWITCH puts in the write tap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import gevent

from ..app.resume import StreamRecord, TapRecord
from ..esl.connection import ESLError
from ..media.frames import PTIME_MS
from .bug_playback import BugPlayback
from .lease import LeaseError
from .reader import FrameReader, drain
from .sources import SourceEnv, SourceError
from .taps import READ, WRITE, Tap, TapError

if TYPE_CHECKING:
    from .pipeline import FramePipeline

log = logging.getLogger(__name__)


class TapSource(BugPlayback):
    """Loopback taps of any call (call/taps.py): read, and write for stereo/mixed."""

    kind = "taps"

    def __init__(self, env: SourceEnv, pipeline: FramePipeline, mix: str,
                 on_moved: Callable[[], None] = lambda: None) -> None:
        self.env = env
        self.pipeline = pipeline
        self._on_moved = on_moved  # taps or ports changed: the stream's record says it again
        self.sides = (READ,) if mix == "mono" else (READ, WRITE)
        self.taps: list[Tap] = []
        self.reopens = 0
        self.frames_skipped = 0  # read-tap frames dropped while the taps were lined up
        self._readers: list[FrameReader] = []
        self._init_playback()

    @property
    def tap_uuids(self) -> list[str]:
        return [tap.uuid for tap in self.taps]

    def open(self) -> None:
        """Make the taps and wait for each one's first datagram: then they are attached, and
        their rate is known. Raises SourceError with every tap already closed."""
        env = self.env
        self.taps = [Tap(env.uuid, side) for side in self.sides]
        try:
            for tap in self.taps:
                tap.open(env.esl, env.ports, env.media_host, env.fs_media_host,
                         probe=env.probe, timeout=env.first_audio_timeout,
                         on_retry=env.retried)
                env.tap_opened(tap.uuid)
        except BaseException as exc:
            self._close_taps()
            if isinstance(exc, TapError):
                raise SourceError(str(exc)) from None
            raise
        self._line_up(env.first_audio_timeout)

    def adopt(self, record: StreamRecord) -> None:
        """Carry on the taps of a stream a previous process started: each tap channel still
        streams to the daemon's old port, bound again here. Where one is gone, a port cannot be
        had, or one gives nothing within a probe, the taps left are killed and new ones made
        (never two sets). Raises SourceError."""
        env = self.env
        alive = [t for t in record.taps if t.side in self.sides and self._exists(t.uuid)]
        if len(alive) == len(self.sides):
            try:
                self.taps = [Tap.adopt(env.uuid, t, env.ports, env.media_host,
                                       env.fs_media_host) for t in alive]
            except LeaseError as exc:
                log.warning("%s: %s: making the taps again", env.uuid, exc)
                self._close_taps()
            else:
                for tap in self.taps:
                    env.tap_opened(tap.uuid)
                try:
                    self._line_up(env.probe)
                except SourceError as exc:
                    log.warning("%s: %s: making the taps again", env.uuid, exc)
        for t in record.taps:  # whatever is not carried on is killed (never two sets of taps)
            if t.uuid not in self.tap_uuids:
                gone = Tap(env.uuid, t.side)
                gone.uuid = t.uuid
                gone.close(env.esl)
        self._adopt_write_back(record)
        if not self.taps:
            self.open()
        self.start()  # into the link's backlog until it connects: the metadata still goes first

    def _exists(self, uuid: str) -> bool:
        try:
            return self.env.esl.api(f"uuid_exists {uuid}").strip() == "true"
        except ESLError:
            return False

    def describe(self) -> dict:
        taps = tuple(TapRecord(t.side, t.uuid, t.lease.port, t.lease.endpoint.port)
                     for t in self.taps if t.lease is not None and t.lease.endpoint is not None)
        fs_port, udp_port = self._write_back_ports()
        return {"taps": taps, "fs_port": fs_port, "udp_port": udp_port}

    def _line_up(self, timeout: float) -> None:
        """Wait for each tap's first datagram, then drop what they queued, so both start
        together. Raises SourceError with every tap already closed."""
        env = self.env
        try:
            deadline = gevent.get_hub().loop.now() + timeout
            for tap in self.taps:
                if not tap.wait_audio(max(0.0, deadline - gevent.get_hub().loop.now())):
                    raise TapError(f"no audio from the {tap.side} tap {timeout:g} s after it "
                                   f"was made (is mod_loopback loaded? is {env.uuid} up? "
                                   f"local-port {', '.join(map(str, tap.ports))} tried)")
            # Each tap started on its own; the earlier one has frames queued from before the
            # later one's first. Drop them all: both then go on from now, within a frame of
            # each other, and pairing by count pairs frames of the same moment (the aligner
            # takes care of a leftover frame of difference).
            rate = 0
            for tap in self.taps:
                sock = tap.lease.endpoint.sock  # type: ignore[union-attr]
                try:
                    first = sock.recv(8192)
                except OSError:
                    first = b""
                rate = rate or len(first) // 2 * (1000 // PTIME_MS)
                skipped = 1 + drain(sock)
                if tap.side == READ:
                    self.frames_skipped += skipped
        except BaseException as exc:
            self._close_taps()
            if isinstance(exc, TapError):
                raise SourceError(str(exc)) from None
            raise
        if not self.pipeline.channel_rate:
            self.pipeline.channel_rate = rate
        player = self._player
        self._in_bug.clear()
        if player is not None and player.displacing is not None:
            self._in_bug.add(player.displacing)  # started before these taps: in them

    def start(self) -> None:
        """Read the taps: the read tap is the caller's side, the write tap what it hears."""
        failed = self.env.failed
        for tap in self.taps:
            take = self.pipeline.feed if tap.side == READ else self.pipeline.feed_write
            self._readers.append(FrameReader(tap.lease.endpoint.sock, take, failed))  # type: ignore[union-attr]

    def _halt(self) -> None:
        self._close_taps()

    def _close_taps(self) -> None:
        for reader in self._readers:
            reader.close()
        self._readers.clear()
        env = self.env
        for tap in self.taps:
            if tap.uuid:
                env.tap_closed(tap.uuid)
            tap.close(env.esl)
        self.taps = []
        self.pipeline.clear_pairing()

    # -- pause, resume, taps killed ---------------------------------------------------------

    def resume(self) -> None:
        """Taps made again (the stream's resume waits for them). Raises SourceError."""
        if self._resuming() and not self.taps:
            self.open()
            self.start()
            self._on_moved()

    def on_call_event(self, name: str) -> None:
        pass

    def stop_reading(self) -> None:
        for reader in self._readers:
            reader.stop()
        if self._write_back is not None:
            self._write_back.stop_reading()

    def tap_gone(self, tap_uuid: str) -> None:
        """A tap channel hung up without us (killed by someone, or its B leg failed): make them
        again, unless the stream or the call is ending anyway."""
        if self._closing or self._job is not None or not self.taps:
            return
        self._job = gevent.spawn(self._reopen, tap_uuid)

    def _reopen(self, tap_uuid: str) -> None:
        env = self.env
        try:
            gevent.sleep(0.2)  # a hang-up of the call itself is seen first: then we stop
            if self._closing or env.gone():
                return
            env.error(f"tap {tap_uuid} ended while the call goes on: making the taps again")
            self._close_taps()
            try:
                self.open()
            except SourceError as exc:
                env.error(str(exc))
                env.failed(exc)
                return
            self.reopens += 1
            if not self._closing:
                self.start()
                self._on_moved()
            else:
                self._close_taps()
        finally:
            self._job = None

    def hand_over(self) -> None:
        """Leave the taps streaming to their ports for the next process: readers and sockets
        closed here, nothing asked of FreeSWITCH."""
        self._end_job(wait=False)
        for reader in self._readers:
            reader.close()
        self._readers.clear()
        for tap in self.taps:
            self.env.tap_closed(tap.uuid)
            if tap.feed is not None:
                tap.feed.close()
            if tap.lease is not None:
                tap.lease.release()
        self.taps = []
        self._release_write_back(None)

    def close(self, hung_up: bool) -> None:
        """Kill the taps and release everything. A background job is let finish (it sees the
        close and closes what it made) rather than killed in the middle of an originate whose
        tap channel would then be nobody's."""
        self._end_job(wait=True)
        self._close_taps()
        self._release_write_back(hung_up)
