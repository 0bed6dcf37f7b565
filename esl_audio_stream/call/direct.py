"""The call's own unicast: the `direct` source, and the write-back port taps use for inject.

FreeSWITCH streams only a parked channel, and only what it reads (facts file); datagrams sent
back to its port are written into the call. So a parked call's own unicast is both the cheapest
source of a mono stream and the only way to inject audio into a call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import gevent.event

from ..app import events
from ..esl.connection import ESLError
from .lease import LeaseError, UnicastFeed, UnicastLease
from .reader import FrameReader
from .sources import Playback, SourceEnv, SourceError

if TYPE_CHECKING:
    from .pipeline import FramePipeline
    from .player import Player

log = logging.getLogger(__name__)


class CallUnicast:
    """The call's own unicast: asked for on a port that works (call/lease.py), read into `take`,
    written back into, and ended in `close` (a zero-length datagram ends FreeSWITCH's write-back
    thread; its unicast only ends when the channel leaves park, so a parked call that goes on is
    re-parked)."""

    def __init__(self, env: SourceEnv, take: Callable[[bytes], None],
                 on_silent: Callable[[list[int]], None] | None = None) -> None:
        self.env = env
        self._take = take
        self._on_silent = on_silent
        self._feed: UnicastFeed | None = None
        self.lease: UnicastLease | None = None  # the port FreeSWITCH streams from
        self._reader: FrameReader | None = None
        self.asked = False  # FreeSWITCH was asked to stream (so it must be told to stop)

    def start(self, first: UnicastLease | None = None) -> None:
        """Ask FreeSWITCH (on `first`, else a port taken now; others while none delivers).
        Raises LeaseError with everything released."""
        env = self.env
        if self._feed is not None:
            self._feed.close()
        self._feed = UnicastFeed(env.esl, env.ports, env.media_host, env.fs_media_host, env.uuid,
                                 probe=env.probe, silent_after=env.first_audio_timeout,
                                 on_first=self._on_first, on_silent=self._on_silent,
                                 on_retry=env.retried, first=first)
        try:
            self._feed.start()
        except LeaseError:
            self._feed = None  # it released its lease
            raise
        self.asked = True

    def _on_first(self, lease: UnicastLease) -> None:
        assert self._feed is not None and lease.endpoint is not None
        self.lease = self._feed.take_winner()
        self._reader = FrameReader(lease.endpoint.sock, self._take, self.env.failed)

    def restart(self) -> None:
        """Ask again, the same port first (its socket is kept): the unicast was torn down."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        lease, self.lease = self.lease, None
        self.start(lease)

    def write(self, frame: bytes) -> bool:
        """One frame into the call, through FreeSWITCH's write-back port."""
        lease = self.lease
        return lease is not None and lease.endpoint.send(frame)  # type: ignore[union-attr]

    def stop_reading(self) -> None:
        if self._reader is not None:
            self._reader.stop()

    def close(self, hung_up: bool) -> None:
        """Make FreeSWITCH stop sending; release the port and socket. Idempotent."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        lease, self.lease = self.lease, None
        if lease is not None and lease.endpoint is not None:
            lease.endpoint.end_write_back()
        if self.asked and not hung_up and self.env.parked():
            self.env.repark()
        self.asked = False
        if self._feed is not None:
            self._feed.close()
            self._feed = None
        if lease is not None:
            lease.release()


class DirectSource:
    """FreeSWITCH's unicast of the (parked) call itself: its frames are the caller's side, and
    they pace the playback (the write-back port, or the queue's clock for displace)."""

    kind = "direct"

    def __init__(self, env: SourceEnv, pipeline: FramePipeline) -> None:
        self.env = env
        self.pipeline = pipeline
        self.restores = 0  # times the unicast was brought back after a broadcast
        self._first: UnicastLease | None = None
        self._unicast = CallUnicast(env, pipeline.feed, self._on_silent)
        self._parked = gevent.event.Event()  # CHANNEL_PARK seen (a re-park after a broadcast)
        self._closed = False

    def open(self) -> None:
        """A port now, before the WebSocket connects: a full pool is refused at once."""
        env = self.env
        try:
            self._first = UnicastLease(env.ports, env.media_host, env.fs_media_host)
        except LeaseError as exc:
            raise SourceError(str(exc)) from None

    def start(self) -> None:
        """Ask FreeSWITCH for the call's audio (on other ports too, while none comes)."""
        first, self._first = self._first, None
        try:
            self._unicast.start(first)
        except LeaseError as exc:
            raise SourceError(str(exc)) from None

    def _on_silent(self, ports: list[int]) -> None:
        env = self.env
        env.fire(events.ERROR, events.error_body(
            events.WS_TIMEOUT,
            f"no audio from FreeSWITCH {env.first_audio_timeout:g} s after start (is the channel "
            f"parked? is local-port {', '.join(map(str, ports))} free?)"))

    def attach(self, player: Player) -> None:
        pass

    def playback(self, mode: str) -> Playback:
        return Playback(mode, write=self._unicast.write, restore=self.restore)

    def restore(self) -> None:
        """After a broadcast FreeSWITCH's unicast is gone for good; only a re-park and a new
        unicast bring it back (facts file). The same port is asked for first, others if it gives
        nothing: it was free while the broadcast played."""
        env = self.env
        if self._closed or self._unicast.lease is None:
            return
        self._parked.clear()
        try:
            env.esl.api(f"uuid_transfer {env.uuid} park inline")
            if not self._parked.wait(env.esl_timeout):
                raise ESLError("the call did not park again")
            if self._closed:
                return
            self.pipeline.restart_timeline()  # the broadcast was a hole, not loss
            self._unicast.restart()
            self.restores += 1
        except (ESLError, LeaseError) as exc:
            log.error("%s: could not bring the stream back after a broadcast: %s", env.uuid, exc)
            env.error(f"stream not restored after broadcast: {exc}")

    def pause(self) -> None:
        pass  # FreeSWITCH keeps sending: the frames pace what plays

    def resume(self) -> None:
        pass

    def on_call_event(self, name: str) -> None:
        if name == "CHANNEL_PARK":
            self._parked.set()

    def stop_reading(self) -> None:
        self._unicast.stop_reading()

    def tap_gone(self, tap_uuid: str) -> None:
        pass

    def close(self, hung_up: bool) -> None:
        """FreeSWITCH told to stop sending; everything released. Idempotent."""
        self._closed = True
        self._unicast.close(hung_up)
        if self._first is not None:
            self._first.release()
            self._first = None


class WriteBackPort(CallUnicast):
    """taps + inject on a parked call: a unicast on the call itself, for its write-back port
    only; its frames are the playback's clock (the read tap carries the same audio)."""

    def __init__(self, env: SourceEnv, tick: Callable[[], None]) -> None:
        super().__init__(env, lambda data: tick())
